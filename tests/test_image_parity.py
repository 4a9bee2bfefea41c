"""Image parity with the official SAM 2 code on mini_a, and the comparer's ability to fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sam2_core import parity


@pytest.fixture(scope="module")
def replayed(mini_a_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replay mini_a's image case once (through the command-line entry point) into a temp dir."""
    out = tmp_path_factory.mktemp("replay")
    assert parity.main(["replay", str(mini_a_dir), str(out), "--image-only"]) == 0
    return out


def test_image_case_matches_official_outputs(mini_a_dir: Path, replayed: Path, capsys) -> None:
    ours = np.load(replayed / parity.IMAGE_CASE)
    ref = np.load(mini_a_dir / parity.IMAGE_CASE)
    expected = {k for k in ref.files if not parity.is_input_key(k)}
    assert expected == set(ours.files)
    assert len(expected) == 25  # 10 encoder arrays + 5 queries x (masks, iou, low_res)

    capsys.readouterr()
    assert parity.main(["compare", str(mini_a_dir), str(replayed)]) == 0
    printed = capsys.readouterr().out
    assert "image_case.npz: PASS" in printed
    assert "refine.out.low_res" in printed


def _copy_with(src: Path, dst: Path, change) -> None:
    arrays = dict(np.load(src / parity.IMAGE_CASE))
    change(arrays)
    dst.mkdir()
    np.savez(dst / parity.IMAGE_CASE, **arrays)


def test_compare_fails_on_perturbed_output(
    mini_a_dir: Path, replayed: Path, tmp_path: Path, capsys
) -> None:
    def nudge(arrays):
        arrays["box.out.masks"] = arrays["box.out.masks"].copy()
        arrays["box.out.masks"][0, 40, 50] += 3e-4  # one pixel, just past the 1e-4 tolerance

    _copy_with(replayed, tmp_path / "out", nudge)
    capsys.readouterr()
    assert parity.main(["compare", str(mini_a_dir), str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert "FAIL: box.out.masks: max |diff|" in printed
    assert "image_case.npz: FAIL" in printed


def test_compare_fails_on_missing_or_misshaped_key(
    mini_a_dir: Path, replayed: Path, tmp_path: Path
) -> None:
    def drop_and_reshape(arrays):
        del arrays["points3.out.iou"]
        arrays["image_embed"] = arrays["image_embed"][..., :8]

    _copy_with(replayed, tmp_path / "out", drop_and_reshape)
    (res,) = parity.compare(mini_a_dir, tmp_path / "out")
    assert not res.passed
    assert any(f.startswith("points3.out.iou: missing") for f in res.failures)
    assert any(f.startswith("image_embed: shape") for f in res.failures)


def test_compare_fails_on_nan(mini_a_dir: Path, replayed: Path, tmp_path: Path) -> None:
    def poison(arrays):
        arrays["point1.out.iou"] = np.full_like(arrays["point1.out.iou"], np.nan)

    _copy_with(replayed, tmp_path / "out", poison)
    (res,) = parity.compare(mini_a_dir, tmp_path / "out")
    assert [f.split(":")[0] for f in res.failures] == ["point1.out.iou"]


def test_compare_errors_clearly_without_outputs(mini_a_dir: Path, tmp_path: Path, capsys) -> None:
    assert parity.main(["compare", str(mini_a_dir), str(tmp_path)]) == 2
    assert "no case files" in capsys.readouterr().err
    assert parity.main(["replay", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    assert "case directory not found" in capsys.readouterr().err
    shutil.copy(mini_a_dir / "config.json", tmp_path / "config.json")
    assert parity.main(["replay", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err


# --- the video tolerances of the comparer, on small synthetic logits --------------------------


def _video_reference(rng: np.random.Generator) -> dict[str, np.ndarray]:
    ref = {"frames": np.zeros((2, 4, 4, 3), np.uint8), "s4.in.mask": np.zeros((4, 4), bool)}
    for f in range(2):
        for o in (1, 2):
            x = rng.normal(0, 5, (100, 100))
            ref[f"p1.f{f}.o{o}"] = (np.sign(x) * (np.abs(x) + 0.01)).astype(
                np.float32
            )  # none near 0
    ref["p1.f1.o2"][:] = parity.ABSENT_LOGIT
    ref["internal.o1.cond_frame_outputs.f0.obj_ptr"] = rng.normal(size=(1, 8)).astype(np.float32)
    return ref


def test_video_comparer_tolerances() -> None:
    rng = np.random.default_rng(0)
    ref = _video_reference(rng)
    logits = [k for k in ref if k.startswith("p1.")]

    ours = {k: v.copy() for k, v in ref.items() if k in logits}
    for k in logits:
        if k != "p1.f1.o2":  # the absent object stays absent
            ours[k] += np.float32(1.5e-3)  # within 2e-3
    ours["internal.o1.cond_frame_outputs.f0.obj_ptr"] = (
        ref["internal.o1.cond_frame_outputs.f0.obj_ptr"] + 1.0
    )
    res = parity.compare_arrays(parity.VIDEO_CASE, ours, ref)
    assert res.passed, res.failures
    assert res.notes and "internal" in res.notes[0]  # internal differences reported, not failing
    assert res.logits == 4 * 100 * 100

    too_far = {**ours, "p1.f0.o1": ours["p1.f0.o1"] + np.float32(3e-3)}
    assert [
        f.split(":")[0] for f in parity.compare_arrays(parity.VIDEO_CASE, too_far, ref).failures
    ] == ["p1.f0.o1"]
    assert parity.compare_arrays(parity.LONG_CASE, too_far, ref).passed  # long case allows 1e-2


def test_video_comparer_counts_sign_flips_over_the_case() -> None:
    ref = _video_reference(np.random.default_rng(1))
    ours = {k: v.copy() for k, v in ref.items() if k.startswith("p1.")}
    # Put 5 logits right at zero in the reference and flip them by a tiny amount:
    # 5 in 40,000 is above 1 in 10,000 although every |diff| is tiny.
    for i in range(5):
        ref["p1.f0.o1"][0, i] = 1e-5
        ours["p1.f0.o1"][0, i] = -1e-5
    res = parity.compare_arrays(parity.VIDEO_CASE, ours, ref)
    assert res.sign_flips == 5
    assert any("change sign" in f for f in res.failures)
    for i in range(1, 5):  # 1 flip in 40,000 is allowed
        ours["p1.f0.o1"][0, i] = 1e-5
    assert parity.compare_arrays(parity.VIDEO_CASE, ours, ref).passed


def test_video_comparer_absence_must_agree() -> None:
    ref = _video_reference(np.random.default_rng(2))
    ours = {k: v.copy() for k, v in ref.items() if k.startswith("p1.")}
    ours["p1.f1.o2"][:] = parity.ABSENT_LOGIT + 1e-3  # close, but not "absent"
    res = parity.compare_arrays(parity.LONG_CASE, ours, ref)
    assert any("absent" in f and f.startswith("p1.f1.o2") for f in res.failures)
    ours["p1.f1.o2"][:] = parity.ABSENT_LOGIT
    ours["p1.f9.o1"] = ref["p1.f0.o1"]  # an object the reference did not return
    res = parity.compare_arrays(parity.LONG_CASE, ours, ref)
    assert res.failures == ["p1.f9.o1: in our output but not in the reference"]
