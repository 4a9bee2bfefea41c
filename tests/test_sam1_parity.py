"""Parity with the official SAM 1 (the ``segment-anything`` 1.0 package, a test extra): the same
parameter names and shapes as Meta's three models, and the same masks and IoU predictions as
Meta's ``SamPredictor`` on the same random weights, image and prompts."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from reference_packages import import_reference

from sam2_core.predictor import ImagePredictor
from sam2_core.sam1 import SAM1_CONFIGS, SAM1Config, ViTConfig, build_sam1, build_sam1_meta

TOL = 1e-4
"""Max |diff| allowed on low-res logits, upsampled logits and IoU predictions."""

# Small enough to run in a second on CPU, and exercising what the full models do: windowed
# blocks whose 7 x 7 windows need padding on the 16 x 16 token grid, and global blocks.
TINY = SAM1Config(
    "sam_vit_tiny_test",
    ViTConfig(
        embed_dim=64,
        depth=4,
        num_heads=4,
        global_attn_indexes=(1, 3),
        window_size=7,
        pretrain_image_size=256,
    ),
    image_size=256,
)


@pytest.fixture(scope="module")
def sa1():
    return import_reference("segment_anything", "segment-anything==1.0")


def official_model(sa1, cfg: SAM1Config):
    """Meta's model built with Meta's classes and builder arguments, at ``cfg``'s sizes."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    enc = cfg.encoder
    grid = cfg.image_size // enc.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=enc.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes),
            window_size=enc.window_size,
            out_chans=enc.out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def perturbed_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights: the default init plus noise, so that zero-initialised tables
    (position embeddings, relative positions) and unit norms matter and outputs depend on prompts."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models(sa1, tmp_path_factory):
    """(official predictor, our predictor) on the same weights; ours loads them from a bare
    state-dict file, as Meta ships its checkpoints."""
    torch.manual_seed(0)
    ref = official_model(sa1, TINY)
    state = perturbed_state(ref)
    ref.load_state_dict(state, strict=True)
    path = tmp_path_factory.mktemp("sam1") / "sam_tiny.pth"
    torch.save(state, path)
    ours = build_sam1(TINY, str(path))
    return sa1.SamPredictor(ref), ImagePredictor(ours)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 200 x 300 image (letterboxed: the model input is padded below it)."""
    rng = np.random.default_rng(1)
    img = np.full((200, 300, 3), 30, np.uint8)
    img[40:150, 60:180] = (210, 60, 40)
    img[120:190, 200:290] = (40, 160, 220)
    return np.clip(img.astype(int) + rng.integers(0, 50, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def both(models, image):
    ref, ours = models
    ref.set_image(image)
    ours.set_image(image)
    return ref, ours


CASES = {
    "one point": dict(point_coords=np.array([[100.0, 90.0]]), point_labels=np.array([1])),
    "points": dict(
        point_coords=np.array([[100.0, 90.0], [240.0, 150.0], [20.5, 180.25]]),
        point_labels=np.array([1, 0, 1]),
    ),
    "box": dict(box=np.array([55.0, 35.0, 185.0, 155.0])),
    "box and points": dict(
        box=np.array([55.0, 35.0, 185.0, 155.0]),
        point_coords=np.array([[100.0, 90.0], [240.0, 150.0]]),
        point_labels=np.array([1, 0]),
    ),
}


def _assert_close(name: str, ours: torch.Tensor, ref) -> None:
    ref = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).float()
    assert tuple(ours.shape) == tuple(ref.shape), (
        f"{name}: {tuple(ours.shape)} vs official {tuple(ref.shape)}"
    )
    diff = (ours.float() - ref).abs().max().item()
    assert diff <= TOL, f"{name}: max |diff| {diff:.2e} > {TOL}"


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_predictions_match_official_sam1(both, case: str, multimask: bool) -> None:
    ref, ours = both
    kwargs = CASES[case]
    masks, ious, low = ref.predict(**kwargs, multimask_output=multimask, return_logits=True)
    pred = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
    _assert_close("low-res logits", pred.low_res_logits, low)
    _assert_close("IoU predictions", pred.ious, ious)
    _assert_close("mask logits", pred.masks, masks)


def test_mask_input_refinement_matches_official_sam1(both) -> None:
    ref, ours = both
    prompt = CASES["one point"]
    _, ious, low = ref.predict(**prompt, multimask_output=True)
    best = low[np.argmax(ious)][None]
    more = dict(
        point_coords=np.array([[100.0, 90.0], [150.0, 60.0]]), point_labels=np.array([1, 1])
    )
    masks2, ious2, low2 = ref.predict(
        **more, mask_input=best, multimask_output=False, return_logits=True
    )
    pred = ours.predict(**more, mask_input=best, multimask_output=False, return_logits=True)
    _assert_close("refined low-res logits", pred.low_res_logits, low2)
    _assert_close("refined IoU", pred.ious, ious2)
    _assert_close("refined mask logits", pred.masks, masks2)


def test_batched_boxes_match_official_sam1(both, image) -> None:
    ref, ours = both
    boxes = np.array(
        [[55.0, 35.0, 185.0, 155.0], [195.0, 115.0, 295.0, 195.0], [0.0, 0.0, 299.0, 199.0]]
    )
    boxes_in = ref.transform.apply_boxes_torch(
        torch.as_tensor(boxes, dtype=torch.float32), image.shape[:2]
    )
    masks, ious, low = ref.predict_torch(
        None, None, boxes=boxes_in, multimask_output=True, return_logits=True
    )
    pred = ours.predict(box=boxes, multimask_output=True, return_logits=True)
    _assert_close("low-res logits", pred.low_res_logits, low)
    _assert_close("IoU predictions", pred.ious, ious)


def test_outputs_depend_on_the_prompt(both) -> None:
    """Guards the parity tests against weights so degenerate that every prompt looks alike."""
    _, ours = both
    a = ours.predict(**CASES["one point"], return_logits=True)
    b = ours.predict(**CASES["box"], return_logits=True)
    assert (a.low_res_logits - b.low_res_logits).abs().max() > 0.1
    assert (a.ious - b.ious).abs().max() > 1e-3


def test_image_embedding_matches_official_sam1(both) -> None:
    ref, ours = both
    _assert_close("image embedding", ours.features.embedding, ref.get_image_embedding())


@pytest.mark.parametrize("name", list(SAM1_CONFIGS))
def test_official_names_and_shapes_match_meta_models(sa1, name: str) -> None:
    """Every tensor name and shape of Meta's vit_b / vit_l / vit_h (built on the meta device,
    nothing downloaded) is ours, and nothing else."""
    with torch.device("meta"):
        ref = sa1.sam_model_registry[name.removeprefix("sam_")]()
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in build_sam1_meta(name).state_dict().items()}
    assert sorted(set(theirs) - set(ours)) == [], "missing here"
    assert sorted(set(ours) - set(theirs)) == [], "not in Meta's model"
    assert {k: s for k, s in ours.items() if theirs[k] != s} == {}, "shapes differ"


def test_official_builder_arguments_are_ours(sa1, monkeypatch) -> None:
    """The three configs carry the arguments Meta's builders pass (width, depth, heads, global
    blocks); the fixed ones (1024 input, 16 px patches, 14 px windows) are our defaults."""
    import sys

    builders = sys.modules["segment_anything.build_sam"]
    monkeypatch.setattr(builders, "_build_sam", lambda **kwargs: kwargs)
    for name, cfg in SAM1_CONFIGS.items():
        args = builders.sam_model_registry[name.removeprefix("sam_")]()
        e = cfg.encoder
        assert (e.embed_dim, e.depth, e.num_heads, list(e.global_attn_indexes)) == (
            args["encoder_embed_dim"],
            args["encoder_depth"],
            args["encoder_num_heads"],
            args["encoder_global_attn_indexes"],
        ), name
        assert (cfg.image_size, e.pretrain_image_size, e.patch_size, e.window_size) == (
            1024,
            1024,
            16,
            14,
        )
