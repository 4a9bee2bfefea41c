"""ONNX export of the video step: with the memory attention and memory encoder graphs, an
``OnnxTracker`` running in onnxruntime alone tracks the mini_a video case frame by frame as
``VideoSession`` does (every logit within 2e-3, the same frames absent): clicks on frame 0,
forward propagation, a negative correction on a tracked frame, propagation again, then in
reverse; and a box-prompted object alongside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")

from sam2_core import build_model  # noqa: E402
from sam2_core.frames import ArrayFrames  # noqa: E402
from sam2_core.modeling.sam2 import NO_OBJECT_SCORE  # noqa: E402
from sam2_core.onnx import MANIFEST_NAME, OnnxManifest, export_onnx  # noqa: E402
from sam2_core.onnx.runtime import OnnxTracker  # noqa: E402
from sam2_core.tracker import TrackerOptions, VideoSession  # noqa: E402

TOL = 2e-3


@pytest.fixture(scope="module")
def mini(mini_a_dir: Path):
    return build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )


@pytest.fixture(scope="module")
def video_export(mini, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("onnx_video")
    export_onnx(mini, dest)
    return dest


@pytest.fixture(scope="module")
def video_case(mini_a_dir: Path) -> tuple[np.ndarray, list[dict]]:
    frames = np.load(mini_a_dir / "video_case.npz")["frames"]
    steps = json.loads((mini_a_dir / "video_steps.json").read_text())["steps"]
    return frames, steps


def _same(torch_result, onnx_result, what: str) -> None:
    assert onnx_result.frame_index == torch_result.frame_index
    assert onnx_result.object_ids == torch_result.object_ids
    want = torch_result.mask_logits.numpy()
    got = onnx_result.mask_logits
    diff = float(np.abs(got - want).max())
    assert diff <= TOL, f"{what} frame {torch_result.frame_index}: max |diff| {diff:.2e} > {TOL}"
    assert np.array_equal(got == NO_OBJECT_SCORE, want == NO_OBJECT_SCORE), (
        f"{what}: absent in one only"
    )
    scores = torch_result.object_score_logits.numpy()
    assert np.abs(onnx_result.object_score_logits - scores).max() <= TOL
    # The host records agree too: the same masks (but where a logit is within TOL of 0),
    # presence and prompted frames.
    mine, theirs = onnx_result.download(), torch_result.download()
    assert (mine.frame_index, mine.object_ids) == (theirs.frame_index, theirs.object_ids)
    assert mine.prompted == theirs.prompted and np.array_equal(mine.present, theirs.present)
    near = np.abs(want) <= TOL
    assert np.array_equal(mine.masks | near, theirs.masks | near), f"{what}: masks differ"
    assert mine.masks.dtype == theirs.masks.dtype == np.bool_


def _propagations(session, tracker, what: str, **kwargs) -> int:
    count = 0
    for want, got in zip(session.propagate(**kwargs), tracker.propagate(**kwargs), strict=True):
        _same(want, got, what)
        count += 1
    return count


def test_export_writes_the_video_graphs_and_tracking_settings(video_export: Path, mini) -> None:
    manifest = OnnxManifest.from_json((video_export / MANIFEST_NAME).read_text())
    assert set(manifest.graphs) == {
        "image_encoder",
        "mask_decoder",
        "memory_attention",
        "memory_encoder",
    }
    for name in ("memory_attention", "memory_encoder"):
        onnx.checker.check_model(onnx.load(str(video_export / manifest.graphs[name].file)))
    assert manifest.tracking["num_maskmem"] == mini.cfg.tracking.num_maskmem
    assert manifest.tracking["binarize_mask_from_pts_for_mem_enc"] is True
    shapes = {t.name: t.shape for t in manifest.graphs["memory_attention"].inputs}
    assert (
        shapes["memory_features"][0] == "num_memories"
        and shapes["object_pointers"][0] == "num_pointers"
    )


def test_onnx_tracker_matches_video_session_on_the_mini_a_video_case(
    mini, video_export: Path, video_case, one_torch_thread
) -> None:
    frames, steps = video_case
    by_tag = {s["tag"]: s for s in steps if s.get("tag")}
    click, correction = by_tag["s1"], by_tag["s3"]
    session = VideoSession(mini, ArrayFrames(frames), TrackerOptions(prefetch_frames=0))
    tracker = OnnxTracker(video_export, frames)

    _same(
        session.add_points(0, 1, click["points"], click["labels"]),
        tracker.add_points(0, 1, click["points"], click["labels"]),
        "s1",
    )
    assert _propagations(session, tracker, "p1") == len(frames)
    # A negative click added to the points of frame 4, a frame already tracked: decoded on its
    # memory with the earlier mask as input, it becomes a conditioning frame.
    want = session.add_points(4, 1, correction["points"], correction["labels"], clear_old=False)
    _same(
        want,
        tracker.add_points(4, 1, correction["points"], correction["labels"], clear_old=False),
        "s3",
    )
    assert _propagations(session, tracker, "p2") == len(frames)
    assert _propagations(session, tracker, "reverse", start_frame=3, reverse=True) == 4


def test_onnx_tracker_tracks_a_box_and_a_click_object_like_video_session(
    mini, video_export: Path, video_case, one_torch_thread
) -> None:
    frames, steps = video_case
    by_tag = {s["tag"]: s for s in steps if s.get("tag")}
    click, box = by_tag["s1"], by_tag["s2"]
    # One object at a time in the session too: the tracker's graphs take one object per call.
    session = VideoSession(
        mini, ArrayFrames(frames), TrackerOptions(prefetch_frames=0, batch_objects=False)
    )
    tracker = OnnxTracker(video_export, frames)
    session.add_points(0, 1, click["points"], click["labels"])
    tracker.add_points(0, 1, click["points"], click["labels"])
    _same(session.add_box(0, 2, box["box"]), tracker.add_box(0, 2, box["box"]), "s2")
    assert _propagations(session, tracker, "p1") == len(frames)


def test_onnx_tracker_refuses_an_export_without_video_graphs(
    mini, tmp_path: Path, video_case
) -> None:
    export_onnx(mini, tmp_path, video=False)
    with pytest.raises(ValueError, match="video graphs"):
        OnnxTracker(tmp_path, video_case[0])


def test_onnx_tracker_refuses_bad_prompts_naming_them(video_export: Path, video_case) -> None:
    tracker = OnnxTracker(video_export, video_case[0])
    with pytest.raises(ValueError, match="labels must be 0"):
        tracker.add_points(0, 1, [[10, 10]], [2])
    with pytest.raises(ValueError, match="1 points but 2 labels"):
        tracker.add_points(0, 1, [[10, 10]], [1, 0])
    with pytest.raises(IndexError, match="out of range"):
        tracker.add_points(8, 1, [[10, 10]], [1])
    with pytest.raises(ValueError, match="no objects to track"):
        next(tracker.propagate())
