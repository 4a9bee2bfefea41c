"""ONNX export of the image path: the graphs written by ``export_onnx`` / ``python -m jobs
export-onnx`` pass onnx's checker, load in onnxruntime and match the torch model (low-res
logits, IoU and object scores within 1e-3) on mini_a (SAM 2.1) and on a random-weight SAM 1,
for clicks, boxes, boxes with clicks, mask inputs, batches of prompts and any number of points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")

from test_sam1 import TINY as SAM1_TINY  # noqa: E402 - one tiny SAM 1 for the tests

from jobs.__main__ import main  # noqa: E402
from sam2_core import build_model  # noqa: E402
from sam2_core.onnx import MANIFEST_NAME, OnnxManifest, export_onnx  # noqa: E402
from sam2_core.onnx.runtime import OnnxModel, upsample_bilinear  # noqa: E402
from sam2_core.predictor import ImagePredictor  # noqa: E402
from sam2_core.sam1 import build_sam1  # noqa: E402

TOL = 1e-3


@pytest.fixture(scope="module")
def mini(mini_a_dir: Path):
    return build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )


@pytest.fixture(scope="module")
def mini_export(mini, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("onnx_mini")
    export_onnx(mini, dest, video=False)
    return dest


@pytest.fixture(scope="module")
def sam1():
    torch.manual_seed(0)
    return build_sam1(SAM1_TINY)


@pytest.fixture(scope="module")
def sam1_export(sam1, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("onnx_sam1")
    export_onnx(sam1, dest)
    return dest


@pytest.fixture(scope="module")
def image_case(mini_a_dir: Path):
    return np.load(mini_a_dir / "image_case.npz")


def _image(h: int = 120, w: int = 180) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 20, np.uint8)
    img[30:90, 40:120] = (220, 90, 30)
    return np.clip(img.astype(int) + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


def _close(got: np.ndarray, want: torch.Tensor | np.ndarray, what: str, tol: float = TOL) -> None:
    want = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    diff = float(np.abs(got - want).max())
    assert diff <= tol, f"{what}: max |diff| {diff:.2e} > {tol}"


def _onnx_features(
    runner: OnnxModel, predictor: ImagePredictor, image: np.ndarray
) -> dict[str, np.ndarray]:
    model = predictor.model
    x = model.image_convention.image_to_input(image, model.image_size).numpy()
    return runner.encode(x)


def _check_decoder(runner, predictor, feats, coords, labels, boxes, mask, orig_hw) -> None:
    """One batch of prompts through the ONNX decoder and through ImagePredictor.predict_torch."""
    model = predictor.model
    conv = model.image_convention
    t_coords = (
        None
        if coords is None
        else conv.to_model_coords(
            torch.as_tensor(coords, dtype=torch.float32), orig_hw, model.image_size
        )
    )
    t_labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int32)
    t_boxes = (
        None
        if boxes is None
        else conv.to_model_coords(
            torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 2), orig_hw, model.image_size
        ).reshape(-1, 4)
    )
    t_mask = None if mask is None else torch.as_tensor(mask)
    # The decoder takes boxes as two labelled corner points before any clicks, as the predictor does.
    o_coords, o_labels = (
        (None if t_coords is None else t_coords.numpy()),
        (None if t_labels is None else t_labels.numpy()),
    )
    if t_boxes is not None:
        corners = t_boxes.numpy().reshape(-1, 2, 2)
        corner_labels = np.tile(np.array([[2, 3]]), (corners.shape[0], 1))
        o_coords = corners if o_coords is None else np.concatenate([corners, o_coords], axis=1)
        o_labels = (
            corner_labels if o_labels is None else np.concatenate([corner_labels, o_labels], axis=1)
        )
    out = runner.decode(feats, o_coords, o_labels, mask)
    for multimask in (True, False):
        want = predictor.predict_torch(
            t_coords, t_labels, t_boxes, t_mask, multimask_output=multimask, return_logits=True
        )
        low, iou = out.slots(multimask)
        clamp = conv.low_res_clamp
        _close(
            low if clamp is None else np.clip(low, -clamp, clamp),
            want.low_res_logits,
            f"low-res logits (multimask={multimask})",
        )
        _close(iou, want.ious, f"IoU predictions (multimask={multimask})")
        if out.object_score_logits is not None:
            _close(out.object_score_logits, want.object_score_logits, "object score logits")


# ---------------------------------------------------------------------- files and manifest


@pytest.mark.parametrize("which", ["mini_export", "sam1_export"])
def test_export_writes_checked_graphs_and_a_manifest_naming_their_inputs(
    which: str, request
) -> None:
    folder: Path = request.getfixturevalue(which)
    manifest = OnnxManifest.from_json((folder / MANIFEST_NAME).read_text())
    assert set(manifest.graphs) == {"image_encoder", "mask_decoder"}
    for spec in manifest.graphs.values():
        proto = onnx.load(str(folder / spec.file))
        onnx.checker.check_model(proto)
        assert [i.name for i in proto.graph.input] == [t.name for t in spec.inputs]
        assert [o.name for o in proto.graph.output] == [t.name for t in spec.outputs]
    decoder_inputs = {t.name: t for t in manifest.graphs["mask_decoder"].inputs}
    assert decoder_inputs["point_coords"].shape[:2] == ("num_prompts", "num_points")
    assert "has_mask_input" in decoder_inputs
    assert manifest.prompts["pad_point"] == (
        "always" if manifest.family == "sam2" else "unless_box"
    )
    assert manifest.preprocessing["resize"] == (
        "stretch" if manifest.family == "sam2" else "longest_side_pad"
    )


def test_manifest_of_another_kind_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not an ONNX export manifest"):
        OnnxModel(tmp_path)
    with pytest.raises(FileNotFoundError, match="no ONNX export manifest"):
        OnnxModel(tmp_path / "missing")


# ---------------------------------------------------------------------- SAM 2 (mini_a)


def test_sam2_encoder_matches_torch_on_mini_a(mini, mini_export: Path, image_case) -> None:
    runner = OnnxModel(mini_export)
    predictor = ImagePredictor(mini)
    predictor.set_image(image_case["image"])
    feats = runner.encode(image_case["input_tensor"])
    _close(feats["image_embeddings"], predictor.features.embedding, "image embeddings")
    _close(feats["high_res_feats_0"], predictor.features.high_res[0], "high-res features 0")
    _close(feats["high_res_feats_1"], predictor.features.high_res[1], "high-res features 1")
    _close(
        feats["vision_features"],
        mini.encode_image(torch.as_tensor(image_case["input_tensor"])).embedding,
        "vision features",
    )
    # The batch axis is dynamic: two images at once give each image's features.
    pair = (
        np.random.default_rng(0)
        .normal(size=(2, 3, mini.image_size, mini.image_size))
        .astype(np.float32)
    )
    with torch.inference_mode():
        want = mini.encode_image(torch.from_numpy(pair))
    got = runner.encode(pair)
    _close(got["vision_features"], want.embedding, "vision features of a batch of two")
    _close(got["high_res_feats_0"], want.high_res[0], "high-res features 0 of a batch of two")


@pytest.mark.parametrize("query", ["point1", "points3", "box", "box_point", "refine"])
def test_sam2_decoder_matches_torch_and_the_recorded_official_outputs(
    mini, mini_export: Path, image_case, query: str
) -> None:
    runner = OnnxModel(mini_export)
    predictor = ImagePredictor(mini)
    image = image_case["image"]
    predictor.set_image(image)
    feats = runner.encode(image_case["input_tensor"])

    def arg(name):
        key = f"{query}.in.{name}"
        return image_case[key] if key in image_case.files else None

    coords, labels, box, mask = (
        arg("point_coords"),
        arg("point_labels"),
        arg("box"),
        arg("mask_input"),
    )
    coords = None if coords is None else coords[None]
    labels = None if labels is None else labels[None]
    box = None if box is None else box.reshape(1, 4)
    mask = None if mask is None else mask.reshape(1, 1, *mask.shape[-2:]).astype(np.float32)
    _check_decoder(runner, predictor, feats, coords, labels, box, mask, image.shape[:2])

    # And against what the official predictor recorded, through the ONNX graphs alone.
    multimask = bool(image_case[f"{query}.in.multimask_output"])
    pts, labs = coords, labels
    conv = mini.image_convention
    hw = image.shape[:2]
    if pts is not None:
        pts = conv.to_model_coords(torch.as_tensor(pts), hw, mini.image_size).numpy()
    if box is not None:
        corners = conv.to_model_coords(
            torch.as_tensor(box.reshape(1, 2, 2)), hw, mini.image_size
        ).numpy()
        pts = corners if pts is None else np.concatenate([corners, pts], axis=1)
        labs = (
            np.array([[2, 3]])
            if labs is None
            else np.concatenate([np.array([[2, 3]]), labs], axis=1)
        )
    low, iou = runner.decode(feats, pts, labs, mask).slots(multimask)
    _close(
        np.clip(low[0], -32, 32), image_case[f"{query}.out.low_res"], "low-res logits vs official"
    )
    _close(iou[0], image_case[f"{query}.out.iou"], "IoU vs official")
    _close(
        upsample_bilinear(low[0], hw),
        image_case[f"{query}.out.masks"],
        "masks at image size vs official",
        tol=2e-3,
    )


def test_sam2_decoder_takes_batches_of_prompts_with_any_number_of_points(
    mini, mini_export: Path, image_case
) -> None:
    runner = OnnxModel(mini_export)
    predictor = ImagePredictor(mini)
    image = image_case["image"]
    predictor.set_image(image)
    feats = runner.encode(image_case["input_tensor"])
    rng = np.random.default_rng(3)
    h, w = image.shape[:2]
    for b, n in [(1, 1), (3, 2), (2, 5), (4, 1)]:
        coords = rng.uniform([0, 0], [w, h], size=(b, n, 2)).astype(np.float32)
        labels = rng.integers(0, 2, size=(b, n))
        _check_decoder(runner, predictor, feats, coords, labels, None, None, (h, w))
    boxes = np.array([[10, 10, 60, 50], [40, 30, 120, 90], [0, 0, 127, 95]], np.float32)
    _check_decoder(runner, predictor, feats, None, None, boxes, None, (h, w))
    # One mask shared by a batch of three prompts, as predict_torch allows.
    mask = rng.normal(0, 5, size=(1, 1, 64, 64)).astype(np.float32)
    coords = rng.uniform([0, 0], [w, h], size=(3, 2, 2)).astype(np.float32)
    _check_decoder(runner, predictor, feats, coords, np.ones((3, 2), np.int64), None, mask, (h, w))


# ---------------------------------------------------------------------- SAM 1 (random weights)


def test_sam1_random_model_encoder_and_decoder_match_torch(sam1, sam1_export: Path) -> None:
    runner = OnnxModel(sam1_export)
    image = _image()
    predictor = ImagePredictor(sam1)
    predictor.set_image(image)
    feats = _onnx_features(runner, predictor, image)
    _close(feats["image_embeddings"], predictor.features.embedding, "SAM 1 image embeddings")
    hw = image.shape[:2]
    rng = np.random.default_rng(1)
    # Clicks (padded), a box (not padded, SAM 1's rule), a box with clicks, several boxes.
    _check_decoder(
        runner, predictor, feats, np.array([[[60.0, 50.0]]]), np.array([[1]]), None, None, hw
    )
    _check_decoder(
        runner,
        predictor,
        feats,
        rng.uniform(0, 110, (2, 4, 2)),
        rng.integers(0, 2, (2, 4)),
        None,
        None,
        hw,
    )
    _check_decoder(runner, predictor, feats, None, None, np.array([[40, 30, 120, 90]]), None, hw)
    _check_decoder(
        runner,
        predictor,
        feats,
        np.array([[[70.0, 60.0]]]),
        np.array([[0]]),
        np.array([[40, 30, 120, 90]]),
        None,
        hw,
    )
    _check_decoder(
        runner,
        predictor,
        feats,
        None,
        None,
        np.array([[40, 30, 120, 90], [5, 5, 50, 40]]),
        None,
        hw,
    )
    # Refining with the previous answer as mask input.
    first = predictor.predict(np.array([[60.0, 50.0]]), np.array([1]), multimask_output=False)
    mask = first.low_res_logits.numpy()[None]
    _check_decoder(
        runner,
        predictor,
        feats,
        np.array([[[60.0, 50.0], [100.0, 70.0]]]),
        np.array([[1, 0]]),
        None,
        mask,
        hw,
    )


# ---------------------------------------------------------------------- command line


def test_export_onnx_command_writes_a_folder_that_onnxruntime_runs(
    mini, mini_a_dir: Path, image_case, tmp_path: Path, capsys
) -> None:
    dest = tmp_path / "out"
    args = [
        "export-onnx",
        "--model",
        str(mini_a_dir / "config.json"),
        "--checkpoint",
        str(mini_a_dir / "checkpoint.pt"),
        "--dest",
        str(dest),
        "--no-video",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "image_encoder.onnx" in printed
        and "mask_decoder.onnx" in printed
        and "model.json" in printed
    )
    runner = OnnxModel(dest)
    feats = runner.encode(image_case["input_tensor"])
    predictor = ImagePredictor(mini)
    predictor.set_image(image_case["image"])
    _close(
        feats["image_embeddings"], predictor.features.embedding, "image embeddings via the command"
    )


def test_export_onnx_command_refuses_an_unknown_model_with_exit_1(tmp_path: Path, capsys) -> None:
    assert (
        main(["export-onnx", "--model", "sam3_hiera_nonexistent", "--dest", str(tmp_path / "x")])
        == 1
    )
    err = capsys.readouterr().err
    assert "unknown model 'sam3_hiera_nonexistent'" in err
    assert "sam2.1_hiera_tiny" in err and "sam_vit_b" in err
    assert not (tmp_path / "x").exists()


def test_export_onnx_command_refuses_a_checkpoint_of_another_model(
    mini_a_dir: Path, tmp_path: Path, capsys
) -> None:
    args = [
        "export-onnx",
        "--model",
        "sam_vit_b",
        "--image-size",
        "256",
        "--checkpoint",
        str(mini_a_dir / "checkpoint.pt"),
        "--dest",
        str(tmp_path / "x"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot build --model 'sam_vit_b'")
    assert not (tmp_path / "x").exists()
