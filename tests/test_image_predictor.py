"""ImagePredictor behaviour on the mini_a model: batching, input types, thresholds and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_core import build_model
from sam2_core.predictor import ImagePrediction, ImagePredictor

# Batched and one-by-one runs differ only by float32 rounding (different matmul shapes).
ATOL, RTOL = 1e-5, 1e-6

BOXES = np.array([[10, 10, 60, 50], [70.4, 43.2, 108.8, 76.8], [0, 0, 127, 95]], dtype=np.float32)
POINTS = np.array(
    [[[38.4, 33.6], [90.0, 60.0]], [[20.0, 70.0], [100.0, 20.0]], [[64.0, 48.0], [5.0, 5.0]]],
    dtype=np.float32,
)
LABELS = np.array([[1, 0], [1, 1], [1, 0]], dtype=np.int64)


@pytest.fixture(scope="module")
def model(mini_a_dir: Path):
    return build_model(str(mini_a_dir / "config.json"), str(mini_a_dir / "checkpoint.pt"))


@pytest.fixture(scope="module")
def image(mini_a_dir: Path) -> np.ndarray:
    return np.load(mini_a_dir / "image_case.npz")["image"]


@pytest.fixture(scope="module")
def other_image() -> np.ndarray:
    """A second image of another size and aspect ratio."""
    rng = np.random.default_rng(0)
    img = np.zeros((120, 80, 3), np.uint8)
    img[20:90, 10:60] = (200, 40, 40)
    return np.clip(img.astype(int) + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor(model, image) -> ImagePredictor:
    p = ImagePredictor(model)
    p.set_image(image)
    return p


def _assert_same(a: ImagePrediction, b: ImagePrediction) -> None:
    for name in ("masks", "ious", "low_res_logits", "object_score_logits"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        torch.testing.assert_close(x, y, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{n}: {m}")


def _row(pred: ImagePrediction, i: int) -> ImagePrediction:
    return ImagePrediction(
        pred.masks[i], pred.ious[i], pred.low_res_logits[i], pred.object_score_logits[i]
    )


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_boxes_equal_each_box_alone(predictor: ImagePredictor, multimask: bool) -> None:
    batch = predictor.predict(box=BOXES, multimask_output=multimask, return_logits=True)
    m = 3 if multimask else 1
    assert batch.masks.shape == (3, m, 96, 128)
    assert batch.low_res_logits.shape == (3, m, 64, 64)
    assert batch.ious.shape == (3, m)
    for i, box in enumerate(BOXES):
        _assert_same(
            _row(batch, i),
            predictor.predict(box=box, multimask_output=multimask, return_logits=True),
        )
    # The boxes really give different masks (the comparison above is not trivially true).
    assert (batch.masks[0] - batch.masks[1]).abs().max() > 0.1


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_points_and_masks_equal_each_alone(
    predictor: ImagePredictor, multimask: bool
) -> None:
    first = predictor.predict(POINTS, LABELS, multimask_output=False, return_logits=True)
    mask_inputs = first.low_res_logits  # 3 x 1 x 64 x 64
    batch = predictor.predict(
        POINTS, LABELS, mask_input=mask_inputs, multimask_output=multimask, return_logits=True
    )
    assert batch.masks.shape[0] == 3
    for i in range(3):
        alone = predictor.predict(
            POINTS[i],
            LABELS[i],
            mask_input=mask_inputs[i],
            multimask_output=multimask,
            return_logits=True,
        )
        _assert_same(_row(batch, i), alone)


def test_batched_boxes_share_one_point_set(predictor: ImagePredictor) -> None:
    point, label = POINTS[0, :1], LABELS[0, :1]
    batch = predictor.predict(point[None], label[None], box=BOXES, return_logits=True)
    for i, box in enumerate(BOXES):
        _assert_same(_row(batch, i), predictor.predict(point, label, box=box, return_logits=True))


def test_set_images_equals_set_image_each(
    model, image: np.ndarray, other_image: np.ndarray
) -> None:
    both = ImagePredictor(model)
    both.set_images([image, other_image])
    one = ImagePredictor(model)
    for index, img in enumerate((image, other_image)):
        one.set_image(img)
        for a, b in zip(both.features.take(index).levels, one.features.levels):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
        h, w = img.shape[:2]
        box = np.array([w * 0.2, h * 0.3, w * 0.7, h * 0.8], dtype=np.float32)
        point, label = np.array([[w * 0.5, h * 0.5]], np.float32), np.array([1])
        for kwargs in ({"box": box}, {"point_coords": point, "point_labels": label}):
            got = both.predict(**kwargs, image_index=index, return_logits=True)
            assert got.masks.shape[-2:] == (h, w)
            _assert_same(got, one.predict(**kwargs, return_logits=True))


def test_pil_input_equals_numpy_input(model, image: np.ndarray) -> None:
    from_numpy, from_pil = ImagePredictor(model), ImagePredictor(model)
    from_numpy.set_image(image)
    from_pil.set_image(Image.fromarray(image))
    for a, b in zip(from_numpy.features.levels, from_pil.features.levels):
        assert torch.equal(a, b)
    _assert_same(
        from_numpy.predict(box=BOXES[1], return_logits=True),
        from_pil.predict(box=BOXES[1], return_logits=True),
    )
    # Other PIL modes are converted to RGB first.
    from_pil.set_image(Image.fromarray(image).convert("RGBA"))
    assert torch.equal(from_numpy.features.embedding, from_pil.features.embedding)


def test_binary_masks_are_logits_above_threshold(
    model, image: np.ndarray, predictor: ImagePredictor
) -> None:
    logits = predictor.predict(POINTS[0], LABELS[0], return_logits=True)
    binary = predictor.predict(POINTS[0], LABELS[0])
    assert binary.masks.dtype == torch.bool
    assert torch.equal(binary.masks, logits.masks > 0)
    assert 0 < binary.masks.sum() < binary.masks.numel()  # neither empty nor full
    torch.testing.assert_close(binary.low_res_logits, logits.low_res_logits)

    strict = ImagePredictor(model, mask_threshold=2.0)
    strict.set_image(image)
    assert torch.equal(strict.predict(POINTS[0], LABELS[0]).masks, logits.masks > 2.0)


def test_low_res_logits_are_clamped(predictor: ImagePredictor) -> None:
    low = predictor.predict(box=BOXES, return_logits=True).low_res_logits
    assert low.min() >= -32.0 and low.max() <= 32.0


def test_object_score_logits_shape(predictor: ImagePredictor) -> None:
    single = predictor.predict(POINTS[0], LABELS[0])
    assert single.object_score_logits.shape == (1,)
    batch = predictor.predict(box=BOXES)
    assert batch.object_score_logits.shape == (3, 1)
    assert batch.object_score_logits.dtype == torch.float32
    arrays = batch.numpy()
    assert set(arrays) == {"masks", "ious", "low_res_logits", "object_score_logits"}
    assert arrays["object_score_logits"].shape == (3, 1)


def test_mismatched_points_and_labels(predictor: ImagePredictor) -> None:
    with pytest.raises(
        ValueError, match=r"point_coords \(1, 3, 2\) and point_labels \(1, 2\) do not match"
    ):
        predictor.predict(np.zeros((3, 2)), np.ones(2))
    with pytest.raises(ValueError, match="do not match"):
        predictor.predict(np.zeros((2, 3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="do not match"):
        predictor.predict(np.zeros((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="given together"):
        predictor.predict(point_coords=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="3 boxes but 2 point sets"):
        predictor.predict(POINTS[:2], LABELS[:2], box=BOXES)


def test_predict_before_set_image(model) -> None:
    fresh = ImagePredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(box=BOXES[0])


def test_bad_images_and_indices(model, predictor: ImagePredictor, image: np.ndarray) -> None:
    fresh = ImagePredictor(model)
    with pytest.raises(ValueError, match="H x W x 3"):
        fresh.set_image(image[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        fresh.set_image(image.astype(np.float32))
    with pytest.raises(ValueError, match="at least one image"):
        fresh.set_images([])
    with pytest.raises(IndexError, match="image_index 1 out of range for 1 image"):
        predictor.predict(box=BOXES[0], image_index=1)


def _model_frame(predictor: ImagePredictor, xy: np.ndarray) -> torch.Tensor:
    """Pixels (x, y) of the 96 x 128 test image -> pixels of the model's square input."""
    size = predictor.model.image_size
    return torch.tensor(xy, dtype=torch.float32) * torch.tensor(
        [size / 128, size / 96], dtype=torch.float32
    )


@pytest.mark.parametrize("multimask", [True, False])
def test_predict_torch_on_model_frame_tensors_equals_predict(
    predictor: ImagePredictor, multimask: bool
) -> None:
    first = predictor.predict(POINTS, LABELS, multimask_output=False, return_logits=True)
    kwargs = {"multimask_output": multimask, "return_logits": True}
    from_pixels = predictor.predict(
        POINTS, LABELS, box=BOXES, mask_input=first.low_res_logits, **kwargs
    )
    from_tensors = predictor.predict_torch(
        point_coords=_model_frame(predictor, POINTS),
        point_labels=torch.as_tensor(LABELS),
        boxes=_model_frame(predictor, BOXES.reshape(-1, 2)).reshape(-1, 4),
        mask_input=first.low_res_logits,
        **kwargs,
    )
    _assert_same(from_tensors, from_pixels)
    # Unbatched prompts come back batched from predict_torch, without the B axis from predict.
    one = predictor.predict_torch(_model_frame(predictor, POINTS[:1]), torch.as_tensor(LABELS[:1]))
    assert one.masks.shape == (1, 3, 96, 128) and one.masks.dtype == torch.bool
    assert torch.equal(one.masks[0], predictor.predict(POINTS[0], LABELS[0]).masks)


def test_predict_torch_shares_one_mask_among_prompts(predictor: ImagePredictor) -> None:
    mask = predictor.predict(
        box=BOXES[0], multimask_output=False, return_logits=True
    ).low_res_logits[None]
    boxes = _model_frame(predictor, BOXES.reshape(-1, 2)).reshape(-1, 4)
    shared = predictor.predict_torch(boxes=boxes, mask_input=mask, return_logits=True)
    for i in range(3):
        _assert_same(
            _row(shared, i), predictor.predict(box=BOXES[i], mask_input=mask[0], return_logits=True)
        )


def test_bad_prompt_shapes_are_refused_by_argument(predictor: ImagePredictor) -> None:
    with pytest.raises(ValueError, match=r"box has shape \(8,\): expected 4 or B x 4"):
        predictor.predict(box=BOXES[:2].reshape(-1))
    with pytest.raises(ValueError, match=r"box has shape \(1, 3, 4\)"):
        predictor.predict(box=BOXES[None])
    with pytest.raises(
        ValueError,
        match=r"point_coords \(1, 2, 2, 2\) and point_labels \(1, 2\) do not match: expected N x 2",
    ):
        predictor.predict(np.zeros((1, 2, 2, 2)), np.ones((1, 2)))
    with pytest.raises(
        ValueError,
        match=r"mask_input has shape \(1, 32, 32\): expected 1 x 64 x 64 or B x 1 x 64 x 64",
    ):
        predictor.predict(box=BOXES[0], mask_input=np.zeros((1, 32, 32), np.float32))
    masks = np.zeros((2, 1, 64, 64), np.float32)
    with pytest.raises(ValueError, match="2 masks in mask_input but 3 prompts"):
        predictor.predict(box=BOXES, mask_input=masks)
    with pytest.raises(ValueError, match="given together"):
        predictor.predict_torch(point_coords=torch.zeros(1, 1, 2))
