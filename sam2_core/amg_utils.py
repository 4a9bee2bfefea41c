"""Building blocks of automatic mask generation: point grids, crops, boxes, scores, NMS,
small-region cleanup and RLE encoding. Plain torch and numpy (no torchvision, no OpenCV)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from .postprocess import region_areas


@dataclass(frozen=True)
class Crop:
    """One image crop to run the point grid on: box (x0, y0, x1, y1) pixels, x1/y1 exclusive;
    layer 0 is the whole image, layer i has (2**i)**2 overlapping crops."""

    box: tuple[int, int, int, int]
    layer: int

    @property
    def hw(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0


def point_grid(n_per_side: int) -> np.ndarray:
    """n_per_side**2 x 2 points (x, y) in [0, 1], cell centres of an n x n grid, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer (0..n_layers); layer i has int(n_per_side / downscale**i) per side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_layers(image_hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[Crop]:
    """The whole image, then for layer i = 1..n_layers a 2**i x 2**i grid of crops that overlap
    by ``overlap_ratio`` of the short side (scaled down by 2 / crops per side), column-major."""
    height, width = image_hw
    crops = [Crop((0, 0, width, height), 0)]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        xs = [int((crop_w - overlap) * i) for i in range(per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(xs, ys):
            crops.append(Crop((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return crops


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """N x H x W booleans -> N x 4 int64 boxes (x1, y1, x2, y2), x2/y2 the last pixel (inclusive);
    (0, 0, 0, 0) for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    y = torch.arange(h, device=masks.device)
    x = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, y, h).amin(dim=1)
    y2 = torch.where(rows, y, -1).amax(dim=1)
    x1 = torch.where(cols, x, w).amin(dim=1)
    x2 = torch.where(cols, x, -1).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 (x1, y1, x2, y2) -> N areas (x2 - x1) * (y2 - y1)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 float boxes -> N x N IoU (NaN where both boxes have zero area and do not overlap)."""
    area = box_area(boxes)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area[:, None] + area[None, :] - inter)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, by decreasing score (ties in
    input order). A box goes when its IoU with a kept, higher-scored box exceeds the threshold."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes.float()[order]) > iou_threshold).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= over[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=order.device)]


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """... x H x W logits -> IoU of the masks cut at threshold + offset and threshold - offset
    (the first lies inside the second): how little the mask moves with the cutoff."""
    inner = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int32)
    outer = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int32)
    return inner / outer


def near_crop_edge(
    boxes: torch.Tensor,
    crop: tuple[int, int, int, int],
    image_hw: tuple[int, int],
    tol: float = 20.0,
) -> torch.Tensor:
    """N x 4 boxes in crop pixels -> N booleans: within ``tol`` pixels of an edge of the crop that
    is not also an edge of the image (such masks are likely cut by the crop)."""
    x0, y0 = crop[0], crop[1]
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=boxes.device)
    crop_t = torch.tensor(crop, dtype=torch.float32, device=boxes.device)
    image_t = torch.tensor(
        [0, 0, image_hw[1], image_hw[0]], dtype=torch.float32, device=boxes.device
    )
    placed = boxes.float() + shift
    at_crop = (placed - crop_t).abs() <= tol
    at_image = (placed - image_t).abs() <= tol
    return (at_crop & ~at_image).any(dim=1)


def remove_small_regions(masks: torch.Tensor, min_area: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 1's clean-up of final masks (N x H x W booleans): fill holes (8-connected background
    regions) of fewer than ``min_area`` pixels, then drop islands (foreground regions) of fewer
    than ``min_area`` pixels, keeping the largest island (the first found, on ties) when all are
    that small. Returns the masks and which of them changed."""
    small = math.ceil(min_area) - 1  # the largest area that counts as small
    if masks.shape[0] == 0 or small < 1:
        return masks, torch.zeros(masks.shape[0], dtype=torch.bool, device=masks.device)
    background = ~masks
    _, hole_area = region_areas(background)
    holes = background & (hole_area <= small)
    filled = masks | holes

    labels, island_area = region_areas(filled)
    islands = filled & (island_area <= small)
    cleaned = filled & ~islands
    all_small = islands.flatten(1).any(dim=1) & ~cleaned.flatten(1).any(dim=1)
    if all_small.any():
        n, h, w = masks.shape
        # Largest island, then smallest label (first in raster order).
        key = torch.where(islands, island_area * (h * w + 2) - labels, -1).flatten(1)
        best = torch.gather(labels.flatten(1), 1, key.argmax(dim=1, keepdim=True))
        largest = (labels == best.view(n, 1, 1)) & islands
        cleaned = torch.where(all_small.view(n, 1, 1), largest, cleaned)
    changed = holes.flatten(1).any(dim=1) | islands.flatten(1).any(dim=1)
    return cleaned, changed


def uncompressed_rle(mask: torch.Tensor) -> dict:
    """H x W booleans -> COCO's uncompressed RLE: {"size": [H, W], "counts": run lengths in
    column-major order, starting with a run of zeros (possibly empty)}."""
    h, w = mask.shape
    flat = mask.t().reshape(-1).cpu()
    change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    edges = torch.cat([torch.zeros(1, dtype=torch.int64), change, torch.tensor([h * w])])
    counts = (edges[1:] - edges[:-1]).tolist()
    if bool(flat[0]):
        counts = [0, *counts]
    return {"size": [h, w], "counts": counts}


def coco_rle(mask: np.ndarray) -> dict:
    """H x W booleans -> COCO's compressed RLE, counts as ASCII text (JSON- and Parquet-safe)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
