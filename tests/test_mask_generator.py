"""Automatic mask generation: the same masks as Meta's generators (``sam2`` 1.1.0's
SAM2AutomaticMaskGenerator on mini_a, ``segment-anything`` 1.0's SamAutomaticMaskGenerator on a
small random SAM 1) -- same count, every mask matched at IoU >= 0.95 -- plus the building blocks
against plain references.

mini_a's random weights make masks that barely depend on the prompt point: at Meta's box NMS
threshold (0.7) a 12 x 12 grid collapses to 3 masks. The settings with a few dozen masks
therefore raise box_nms_thresh to 1.0 (NMS then only drops nothing); NMS proper is pinned by
the default-threshold case and by test_box_nms_matches_greedy_reference.
"""

from __future__ import annotations

import json
import sys
import types
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_packages import import_reference
from test_sam1_parity import TINY, official_model, perturbed_state

from sam2_core import amg_utils as amg
from sam2_core import build_model
from sam2_core.mask_generator import MaskGenerator, MaskGeneratorSettings, MaskRecord
from sam2_core.sam1 import build_sam1

MIN_IOU = 0.95


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """200 x 300 RGB: two coloured rectangles on noise."""
    rng = np.random.default_rng(1)
    img = np.full((200, 300, 3), 30, np.uint8)
    img[40:150, 60:180] = (210, 60, 40)
    img[120:190, 200:290] = (40, 160, 220)
    return np.clip(img.astype(int) + rng.integers(0, 50, img.shape), 0, 255).astype(np.uint8)


def matched_ious(ours: list[np.ndarray], ref: list[np.ndarray]) -> list[float]:
    """Pair masks one to one, best IoU first (global greedy), and return the pairs' IoUs."""
    if not ours or not ref:
        return []
    a = torch.as_tensor(np.stack(ours)).flatten(1).float()
    b = torch.as_tensor(np.stack(ref)).flatten(1).float()
    inter = a @ b.T
    iou = inter / (a.sum(1)[:, None] + b.sum(1)[None, :] - inter).clamp(min=1)
    pairs = []
    for _ in range(min(len(ours), len(ref))):
        i, j = divmod(int(iou.argmax()), iou.shape[1])
        pairs.append(float(iou[i, j]))
        iou[i, :], iou[:, j] = -1, -1
    return pairs


def assert_same_masks(ours: list[MaskRecord], ref: list[dict], label: str) -> None:
    ious = matched_ious([r.segmentation for r in ours], [r["segmentation"] for r in ref])
    print(
        f"{label}: {len(ours)} masks (official {len(ref)}), min IoU {min(ious, default=float('nan')):.4f}"
    )
    assert len(ours) == len(ref), f"{label}: {len(ours)} masks, official {len(ref)}"
    assert min(ious, default=1.0) >= MIN_IOU, f"{label}: worst matched IoU {min(ious):.4f}"


# --------------------------------------------------------------------------- SAM 2 (mini_a)


def _sam2_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for the CUDA extension ``sam2._C.get_connected_componnets`` (not built on a CPU
    install, where Meta's predictor then skips hole filling): 8-connected labels and per-pixel
    region areas of N x 1 x H x W masks, by OpenCV (independent of our implementation)."""
    import cv2

    m = mask.cpu().numpy().astype(np.uint8)
    labels = np.zeros(m.shape, np.int32)
    areas = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        _, lab, stats, _ = cv2.connectedComponentsWithStats(m[i, 0], connectivity=8)
        labels[i, 0] = lab
        areas[i, 0] = np.where(lab > 0, stats[lab, cv2.CC_STAT_AREA], 0)
    return torch.from_numpy(labels), torch.from_numpy(areas)


@pytest.fixture(scope="module")
def sam2_pair(mini_a_dir: Path):
    """(Meta's SAM 2 model, ours) on mini_a's weights."""
    import_reference("sam2", "sam2==1.1.0")
    pytest.importorskip("cv2", reason="the sam2._C stand-in uses OpenCV")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = json.loads((mini_a_dir / "config.json").read_text())
    ref = instantiate(OmegaConf.create(config["resolved"]), _recursive_=True)
    state = torch.load(mini_a_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    ref.load_state_dict(state, strict=True)
    ours = build_model(str(mini_a_dir / "config.json"), str(mini_a_dir / "checkpoint.pt"))
    return ref.eval(), ours


@pytest.fixture
def sam2_extension(monkeypatch):
    import sam2

    ext = types.ModuleType("sam2._C")
    ext.get_connected_componnets = _sam2_connected_components
    monkeypatch.setitem(sys.modules, "sam2._C", ext)
    monkeypatch.setattr(sam2, "_C", ext, raising=False)


def official_sam2_masks(model, image: np.ndarray, settings: dict) -> list[dict]:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(model, **settings)
    # Meta's image predictor hard-codes the 1024-input feature sizes; mini_a's input is 256.
    size = model.image_size
    gen.predictor._bb_feat_sizes = [
        (size // 4, size // 4),
        (size // 8, size // 8),
        (size // 16, size // 16),
    ]
    return gen.generate(image)


FEW_DOZEN = dict(
    points_per_side=8,
    pred_iou_thresh=0.7,
    stability_score_thresh=0.53,
    stability_score_offset=0.25,
    box_nms_thresh=1.0,
)
SAM2_CASES = {
    # Meta's NMS threshold: 432 candidates collapse to a few masks.
    "default nms": dict(points_per_side=12, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    "few dozen": FEW_DOZEN,
    "crops": dict(
        points_per_side=6,
        pred_iou_thresh=0.7,
        stability_score_thresh=0.0,
        crop_n_layers=1,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
    ),
    "crops with crop nms": dict(
        points_per_side=6,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=1,
        box_nms_thresh=1.0,
        crop_nms_thresh=0.9,
    ),
    "min region area": dict(FEW_DOZEN, min_mask_region_area=30),
    "m2m": dict(FEW_DOZEN, stability_score_thresh=0.5, use_m2m=True),
    "single mask": dict(FEW_DOZEN, pred_iou_thresh=0.5, multimask_output=False),
}


@pytest.mark.parametrize("case", list(SAM2_CASES))
def test_sam2_masks_match_official_generator(case, sam2_pair, sam2_extension, image) -> None:
    ref_model, ours_model = sam2_pair
    settings = SAM2_CASES[case]
    ref = official_sam2_masks(ref_model, image, settings)
    ours = MaskGenerator(ours_model, **settings).generate(image)
    assert_same_masks(ours, ref, f"sam2 {case}")
    assert len(ours) >= 1


@pytest.fixture(scope="module")
def ours_sam2(mini_a_dir: Path):
    """Our SAM 2 on mini_a (no reference package needed)."""
    return build_model(str(mini_a_dir / "config.json"), str(mini_a_dir / "checkpoint.pt"))


def test_sam2_hole_filling_changes_the_masks(ours_sam2, image) -> None:
    """min_mask_region_area is not a no-op on mini_a (so the parity case above means something)."""
    ours_model = ours_sam2
    plain = MaskGenerator(ours_model, **FEW_DOZEN).generate(image)
    cleaned = MaskGenerator(ours_model, **dict(FEW_DOZEN, min_mask_region_area=30)).generate(image)
    assert len(plain) != len(cleaned) or any(
        not np.array_equal(a.segmentation, b.segmentation) for a, b in zip(plain, cleaned)
    )


# --------------------------------------------------------------------------- SAM 1 (random)


@pytest.fixture(scope="module")
def sam1_pair(tmp_path_factory):
    """(Meta's SAM 1 model, ours) on the same seeded, perturbed random weights."""
    sa1 = import_reference("segment_anything", "segment-anything==1.0")
    torch.manual_seed(0)
    ref = official_model(sa1, TINY)
    state = perturbed_state(ref)
    ref.load_state_dict(state, strict=True)
    path = tmp_path_factory.mktemp("sam1") / "sam_tiny.pth"
    torch.save(state, path)
    return sa1, ref, build_sam1(TINY, str(path))


SAM1_CASES = {
    "default nms": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    "few dozen": dict(
        points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    ),
    # SAM 1 cleans the final masks (every one of these noisy masks changes), then reruns box NMS.
    "min region area": dict(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        min_mask_region_area=100,
    ),
    "min region area, nms": dict(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.98,
        min_mask_region_area=100,
    ),
}


@pytest.mark.parametrize("case", list(SAM1_CASES))
def test_sam1_masks_match_official_generator(case, sam1_pair, image) -> None:
    sa1, ref_model, ours_model = sam1_pair
    settings = SAM1_CASES[case]
    ref = sa1.SamAutomaticMaskGenerator(ref_model, **settings).generate(image)
    ours = MaskGenerator(ours_model, **settings).generate(image)
    assert_same_masks(ours, ref, f"sam1 {case}")
    assert len(ours) >= 1


def test_family_defaults() -> None:
    sam1 = MaskGeneratorSettings().for_model(build_sam1(TINY))
    assert (sam1.pred_iou_thresh, sam1.cleanup) == (0.88, "masks")
    assert (
        MaskGeneratorSettings(pred_iou_thresh=0.5).for_model(build_sam1(TINY)).pred_iou_thresh
        == 0.5
    )


# --------------------------------------------------------------------------- output modes


def test_coco_rle_decodes_to_the_binary_masks(ours_sam2, image) -> None:
    from pycocotools import mask as mask_utils

    ours_model = ours_sam2
    binary = MaskGenerator(ours_model, **FEW_DOZEN).generate(image)
    coco = MaskGenerator(ours_model, **dict(FEW_DOZEN, output_mode="coco_rle")).generate(image)
    plain = MaskGenerator(ours_model, **dict(FEW_DOZEN, output_mode="uncompressed_rle")).generate(
        image
    )
    assert len(binary) == len(coco) == len(plain) > 0
    for b, c, p in zip(binary, coco, plain):
        assert isinstance(c.segmentation["counts"], str)
        rle = dict(c.segmentation, counts=c.segmentation["counts"].encode("ascii"))
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), b.segmentation)
        from_plain = mask_utils.decode(
            mask_utils.frPyObjects(p.segmentation, *p.segmentation["size"])
        )
        np.testing.assert_array_equal(from_plain.astype(bool), b.segmentation)
        assert c.area == b.area == int(b.segmentation.sum())


# --------------------------------------------------------------------------- building blocks


def _flood_regions(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Reference: 8-connected regions of a 2-D boolean mask by breadth-first search, raster order."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    regions = []
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            region, queue = [], deque([(i, j)])
            seen[i, j] = True
            while queue:
                y, x = queue.popleft()
                region.append((y, x))
                for v in (y - 1, y, y + 1):
                    for u in (x - 1, x, x + 1):
                        if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                            seen[v, u] = True
                            queue.append((v, u))
            regions.append(region)
    return regions


def _remove_small_by_flood(mask: np.ndarray, min_area: int) -> np.ndarray:
    out = mask.copy()
    for region in _flood_regions(~mask):
        if len(region) < min_area:
            for p in region:
                out[p] = True
    islands = _flood_regions(out)
    big = [r for r in islands if len(r) >= min_area]
    if len(big) == len(islands):
        return out
    keep = big or [max(islands, key=len)]
    result = np.zeros_like(out)
    for region in keep:
        for p in region:
            result[p] = True
    return result


def test_remove_small_regions_equals_a_flood_fill_reference() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((12, 23, 31)) < np.linspace(0.2, 0.8, 12)[:, None, None]
    masks[0] = False
    masks[1] = False
    masks[1, 3, 4] = masks[1, 10, 10:12] = True  # every island small: keep the largest
    cleaned, changed = amg.remove_small_regions(torch.from_numpy(masks), 5)
    for i in range(len(masks)):
        expected = _remove_small_by_flood(masks[i], 5)
        np.testing.assert_array_equal(cleaned[i].numpy(), expected, err_msg=f"mask {i}")
        assert bool(changed[i]) == (not np.array_equal(expected, masks[i])) or i == 0


def test_box_nms_matches_greedy_reference() -> None:
    rng = np.random.default_rng(3)
    xy = rng.integers(0, 40, (60, 2))
    boxes = torch.as_tensor(np.concatenate([xy, xy + rng.integers(0, 20, (60, 2))], 1))
    scores = torch.as_tensor(rng.integers(0, 5, 60).astype(np.float32))  # many ties
    iou = amg.box_iou(boxes.float()).numpy()
    order = sorted(range(60), key=lambda i: (-scores[i].item(), i))
    kept: list[int] = []
    for i in order:
        if all(not iou[i, k] > 0.5 for k in kept):
            kept.append(i)
    assert amg.box_nms(boxes, scores, 0.5).tolist() == kept


def test_masks_to_boxes_and_uncompressed_rle() -> None:
    m = torch.zeros(3, 5, 7, dtype=torch.bool)
    m[0, 1:3, 2:6] = True
    m[2, 0, 0] = m[2, 4, 6] = True
    assert amg.masks_to_boxes(m).tolist() == [[2, 1, 5, 2], [0, 0, 0, 0], [0, 0, 6, 4]]
    rle = amg.uncompressed_rle(m[2])
    assert rle == {"size": [5, 7], "counts": [0, 1, 33, 1]}


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        MaskGeneratorSettings(points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        MaskGeneratorSettings(output_mode="png")
    with pytest.raises(ValueError, match="point_grids has 1 grids but crop_n_layers=1"):
        MaskGeneratorSettings(
            points_per_side=None, point_grids=(amg.point_grid(4),), crop_n_layers=1
        )
