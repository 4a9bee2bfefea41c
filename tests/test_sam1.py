"""SAM 1 without the reference package: strict loading by name (and refusal of SAM 2
checkpoints, and the reverse), the checkpoint table, other input sizes, and the ImagePredictor
interface serving SAM 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_core import CheckpointError, build_model
from sam2_core.predictor import ImagePredictor
from sam2_core.sam1 import (
    SAM1_CHECKPOINTS,
    SAM1_CONFIGS,
    SAM1Config,
    ViTConfig,
    build_sam1,
    sam1_config,
)

TINY = SAM1Config(
    "sam_vit_tiny_test",
    ViTConfig(
        embed_dim=64,
        depth=2,
        num_heads=4,
        global_attn_indexes=(1,),
        window_size=7,
        pretrain_image_size=256,
    ),
    image_size=256,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A bare state dict (Meta's SAM 1 layout) of a tiny SAM 1."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam1") / "tiny.pth"
    torch.save(build_sam1(TINY).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((120, 180, 3), 20, np.uint8)
    img[30:90, 40:120] = (220, 90, 30)
    return np.clip(img.astype(int) + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


def test_checkpoint_table_names_the_three_official_files() -> None:
    assert set(SAM1_CHECKPOINTS) == set(SAM1_CONFIGS) == {"sam_vit_b", "sam_vit_l", "sam_vit_h"}
    assert (
        SAM1_CHECKPOINTS["sam_vit_b"].url()
        == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    )
    assert [c.filename for c in SAM1_CHECKPOINTS.values()] == [
        "sam_vit_b_01ec64.pth",
        "sam_vit_l_0b3195.pth",
        "sam_vit_h_4b8939.pth",
    ]
    for c in SAM1_CHECKPOINTS.values():
        assert len(c.sha256) == 64 and int(c.sha256, 16) >= 0, c.name


def test_bare_state_dict_loads_strictly(tiny_checkpoint: Path) -> None:
    model = build_sam1(TINY, str(tiny_checkpoint))
    saved = torch.load(tiny_checkpoint, weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_sam1_name_with_a_sam2_checkpoint_is_refused_with_the_tensor_list(mini_a_dir: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        build_sam1("sam_vit_b", str(mini_a_dir / "checkpoint.pt"))
    msg = str(err.value)
    assert "(sam_vit_b)" in msg
    assert "missing: image_encoder.blocks.0.attn.proj.bias" in msg
    assert "unexpected: image_encoder.neck.convs.0.conv.bias" in msg


def test_sam2_name_with_a_sam1_checkpoint_is_refused_with_the_tensor_list(
    tiny_checkpoint: Path,
) -> None:
    with pytest.raises(CheckpointError) as err:
        build_model("sam2.1_hiera_tiny", str(tiny_checkpoint))
    msg = str(err.value)
    assert "(sam2.1_hiera_tiny)" in msg
    assert "missing: " in msg and "image_encoder.neck.convs" in msg
    assert "unexpected: image_encoder.blocks.0.attn.proj.bias" in msg


def test_sam1_checkpoint_of_another_size_is_refused_with_the_shapes(tiny_checkpoint: Path) -> None:
    wider = SAM1Config(
        "wider",
        ViTConfig(
            embed_dim=128,
            depth=2,
            num_heads=4,
            global_attn_indexes=(1,),
            window_size=7,
            pretrain_image_size=256,
        ),
        image_size=256,
    )
    with pytest.raises(
        CheckpointError,
        match=r"of the wrong shape: image_encoder.blocks.0.attn.proj.bias \(64,\) \(model: \(128,\)\)",
    ):
        build_sam1(wider, str(tiny_checkpoint))


def test_unknown_sam1_name_lists_the_official_ones() -> None:
    with pytest.raises(KeyError, match="sam_vit_b, sam_vit_l, sam_vit_h"):
        sam1_config("sam_vit_x")


def test_image_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        sam1_config("sam_vit_b", image_size=500)


@pytest.mark.parametrize("multimask", [True, False])
def test_image_predictor_serves_sam1(
    tiny_checkpoint: Path, image: np.ndarray, multimask: bool
) -> None:
    predictor = ImagePredictor(build_sam1(TINY, str(tiny_checkpoint)))
    predictor.set_image(image)
    m = 3 if multimask else 1
    pred = predictor.predict(
        point_coords=[[60.0, 50.0]], point_labels=[1], multimask_output=multimask
    )
    assert pred.masks.shape == (m, 120, 180) and pred.masks.dtype == torch.bool
    assert pred.ious.shape == (m,) and pred.low_res_logits.shape == (m, 64, 64)
    boxed = predictor.predict(box=[[40, 30, 120, 90], [0, 0, 179, 119]], multimask_output=multimask)
    assert boxed.masks.shape == (2, m, 120, 180)
    refined = predictor.predict(
        point_coords=[[60.0, 50.0]],
        point_labels=[1],
        box=[40, 30, 120, 90],
        mask_input=pred.low_res_logits[:1],
        multimask_output=multimask,
    )
    assert refined.masks.shape == (m, 120, 180)
    assert torch.all(pred.object_score_logits > 0)  # no object-score head: always judged present


def test_batched_boxes_equal_each_box_alone(tiny_checkpoint: Path, image: np.ndarray) -> None:
    predictor = ImagePredictor(build_sam1(TINY, str(tiny_checkpoint)))
    predictor.set_image(image)
    boxes = np.array([[40, 30, 120, 90], [0, 0, 179, 119]], dtype=np.float32)
    both = predictor.predict(box=boxes, return_logits=True)
    for i, box in enumerate(boxes):
        one = predictor.predict(box=box, return_logits=True)
        torch.testing.assert_close(both.low_res_logits[i], one.low_res_logits, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(both.ious[i], one.ious, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("image_size", [128, 512])
def test_other_input_sizes_keep_the_checkpoint_and_scale_the_outputs(
    tiny_checkpoint: Path, image: np.ndarray, image_size: int
) -> None:
    """Weights at the pretraining size (256 here) run at another input size, as Ultralytics'
    ``set_imgsz`` allows: position tables are resized on the fly, outputs follow the new grid."""
    model = build_sam1(TINY, str(tiny_checkpoint), image_size=image_size)
    assert model.image_encoder.pos_embed.shape == (1, 16, 16, 64)
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    pred = predictor.predict(point_coords=[[60.0, 50.0]], point_labels=[1])
    grid = image_size // 16
    assert predictor.features.embedding.shape == (1, 256, grid, grid)
    assert pred.low_res_logits.shape == (3, 4 * grid, 4 * grid) and pred.masks.shape == (
        3,
        120,
        180,
    )
    assert torch.isfinite(pred.low_res_logits).all()

    resized = build_sam1(TINY, str(tiny_checkpoint))
    resized.set_image_size(image_size)
    again = ImagePredictor(resized)
    again.set_image(image)
    torch.testing.assert_close(
        again.predict(point_coords=[[60.0, 50.0]], point_labels=[1]).low_res_logits,
        pred.low_res_logits,
    )


def test_set_image_size_back_to_the_pretraining_size_is_unchanged(
    tiny_checkpoint: Path, image: np.ndarray
) -> None:
    model = build_sam1(TINY, str(tiny_checkpoint))
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    before = predictor.predict(point_coords=[[60.0, 50.0]], point_labels=[1]).low_res_logits
    model.set_image_size(512)
    model.set_image_size(256)
    predictor.set_image(image)
    torch.testing.assert_close(
        predictor.predict(point_coords=[[60.0, 50.0]], point_labels=[1]).low_res_logits,
        before,
        atol=0,
        rtol=0,
    )
