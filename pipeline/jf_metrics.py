"""Per-frame J and F of a predicted mask against the true one, as in DAVIS 2017 and SA-V.

For one frame of one object:

- **J** (region similarity) is the IoU of the predicted and true masks; two
  empty masks score 1.
- **F** (boundary accuracy) compares one-pixel boundary maps. A mask's
  boundary map marks each pixel whose value differs from its right, lower or
  lower-right neighbour (the boundary sits half a pixel towards the origin;
  the last row only compares with the right neighbour, the last column only
  with the lower one, and the bottom-right pixel is never a boundary). A
  boundary pixel counts as matched when the other map has a boundary pixel
  within a disk of radius ``ceil(bound_th * image diagonal)`` pixels
  (``bound_th = 0.008``; a ``bound_th >= 1`` is the radius itself).
  Precision = matched predicted / predicted boundary pixels, recall =
  matched true / true boundary pixels, F = 2PR / (P + R) (0 when P + R = 0).
  Empty boundaries follow DAVIS: both empty gives P = R = 1; only the
  prediction empty gives P = 1, R = 0; only the truth empty gives P = 0, R = 1
  (so F = 1, 0 and 0).

Scoring whole tables (which frames count, means over objects and videos) is
:mod:`pipeline.evaluate`'s.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BOUND_TH = 0.008


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: intersection over union of two H x W masks; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = int(np.count_nonzero(pred | gt))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / union


def boundary_tolerance(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Matching radius in pixels: ``ceil(bound_th * diagonal)``, or ``bound_th`` itself when >= 1."""
    if bound_th <= 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(
                f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th}"
            )
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of an H x W mask, with the DAVIS (Martin et al.) conventions above."""
    seg = np.asarray(mask, dtype=bool)
    if seg.ndim != 2:
        raise ValueError(f"boundary_map needs an H x W mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ down[:, -1]
    bmap[-1, -1] = False
    return bmap


def dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disk {(dx, dy): dx^2 + dy^2 <= radius^2}; outside the image is empty.

    The disk is split into horizontal runs, one per row offset; each run is a
    box filter along rows (a cumulative-sum difference), shifted vertically.
    """
    b = np.asarray(bmap, dtype=bool)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0 or not b.any():
        return b.copy()
    h, w = b.shape
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(b, axis=1, out=csum[:, 1:])
    cols = np.arange(w)
    runs: dict[int, np.ndarray] = {}
    out = np.zeros_like(b)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in runs:
            lo = np.clip(cols - half, 0, w)
            hi = np.clip(cols + half + 1, 0, w)
            runs[half] = (csum[:, hi] - csum[:, lo]) > 0
        run = runs[half]
        if abs(dy) >= h:
            continue
        out[max(dy, 0) : h + min(dy, 0)] |= run[max(-dy, 0) : h - max(dy, 0)]
    return out


def boundary_f_measure(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH
) -> float:
    """F: boundary F-measure of two H x W masks (DAVIS conventions, see the module docstring)."""
    pred, gt = _pair(pred, gt)
    radius = boundary_tolerance(gt.shape[0], gt.shape[1], bound_th)
    # Only the region around the masks matters: crop to their joint bounding
    # box plus one pixel (the boundary map reaches one pixel towards the
    # origin). The crop's last row/column are empty unless they are the
    # image's own, so the last-row/column rule gives the same map there.
    either = pred | gt
    if not either.any():
        return 1.0
    rows = np.flatnonzero(either.any(axis=1))
    cols = np.flatnonzero(either.any(axis=0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, gt.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, gt.shape[1])
    pb = boundary_map(pred[r0:r1, c0:c1])
    gb = boundary_map(gt[r0:r1, c0:c1])
    n_pred = int(np.count_nonzero(pb))
    n_gt = int(np.count_nonzero(gb))
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int(np.count_nonzero(pb & dilate_disk(gb, radius))) / n_pred
        recall = int(np.count_nonzero(gb & dilate_disk(pb, radius))) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(
            f"masks must be H x W of one shape, got prediction {pred.shape} and truth {gt.shape}"
        )
    return pred, gt
