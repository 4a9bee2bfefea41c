"""A simulated user's clicks on ground-truth masks, for training and for prompting benchmarks.

``first_click`` and ``corrective_click`` pick the interior-most point of an object, or of the
largest prediction error (the usual robot-user rule of interactive segmentation benchmarks);
``prompt_frame`` picks the frame an object is first clearly visible on. Plain numpy.
"""

from __future__ import annotations

import numpy as np


def distance_transform(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance from each True pixel to the nearest False pixel (H x W float32).

    Pixels outside the image count as False, so a click chosen from it also
    keeps away from the frame edge. Exact: a column pass gives each pixel's
    vertical distance to the nearest False pixel, then a row pass minimises
    ``g(x')**2 + (x - x')**2`` over offsets, stopping once no offset can
    improve any pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"distance_transform needs an H x W mask, got shape {mask.shape}")
    out = np.zeros(mask.shape, dtype=np.float32)
    if not mask.any():
        return out
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = np.pad(mask[r0:r1, c0:c1], 1)
    h, w = m.shape

    idx = np.arange(h, dtype=np.int64)[:, None]
    big = np.int64(4 * (h + w))
    above = np.maximum.accumulate(np.where(m, -big, idx), axis=0)
    below = np.minimum.accumulate(np.where(m, big, idx)[::-1], axis=0)[::-1]
    g2 = np.minimum(idx - above, below - idx).astype(np.int64) ** 2  # vertical distance squared

    d2 = g2.copy()
    k = 1
    while k < w and k * k < d2.max():
        cand = g2[:, k:] + k * k  # from the pixel k columns to the right
        np.minimum(d2[:, :-k], cand, out=d2[:, :-k])
        cand = g2[:, :-k] + k * k  # from the pixel k columns to the left
        np.minimum(d2[:, k:], cand, out=d2[:, k:])
        k += 1
    out[r0:r1, c0:c1] = np.sqrt(d2[1:-1, 1:-1].astype(np.float64)).astype(np.float32)
    return out


def first_click(mask: np.ndarray) -> tuple[int, int]:
    """A positive click well inside the object: the (x, y) pixel farthest from its boundary.

    Ties go to the first such pixel in raster order, so the click is deterministic.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"first_click needs an H x W mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("first_click needs a non-empty mask")
    dist = distance_transform(mask)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def corrective_click(
    pred_mask: np.ndarray, gt_mask: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[int, int, int] | None:
    """The next click a user would make to fix ``pred_mask``: (x, y, label), or None if it is perfect.

    The click goes into whichever error is larger, measured by its thickest
    part (largest distance to its own boundary): missed foreground gives
    label 1, false positive label 0. Without ``rng`` the click is the
    interior-most error pixel; with ``rng`` it is drawn uniformly from the
    pixels at least half that deep (varied clicks for training).
    """
    pred = np.asarray(pred_mask, dtype=bool)
    gt = np.asarray(gt_mask, dtype=bool)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(
            f"corrective_click needs two H x W masks of one shape, got {pred.shape} and {gt.shape}"
        )
    missed = gt & ~pred
    extra = pred & ~gt
    if not missed.any() and not extra.any():
        return None
    d_missed = distance_transform(missed)
    d_extra = distance_transform(extra)
    if d_missed.max() >= d_extra.max():
        dist, label = d_missed, 1
    else:
        dist, label = d_extra, 0
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        ys, xs = np.nonzero(dist >= max(0.5 * float(dist.max()), 1.0))
        i = int(rng.integers(len(ys)))
        y, x = ys[i], xs[i]
    return int(x), int(y), label


def prompt_frame(track: np.ndarray, min_fraction: float = 0.25) -> int:
    """The first frame where an object is clearly visible, for placing its first click.

    ``track`` is T x H x W bool (one object's masks). The frame chosen is the
    first whose area reaches ``min_fraction`` of the object's largest area,
    so an object entering the frame is not prompted on a sliver;
    ``min_fraction=0`` gives the first frame where any of it shows.
    """
    track = np.asarray(track, dtype=bool)
    if track.ndim != 3:
        raise ValueError(f"prompt_frame needs a T x H x W mask track, got shape {track.shape}")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    return prompt_frame_of_areas(track.reshape(track.shape[0], -1).sum(axis=1), min_fraction)


def prompt_frame_of_areas(areas: np.ndarray, min_fraction: float = 0.25) -> int:
    """:func:`prompt_frame` from an object's mask area on each frame (T), for callers that
    keep masks encoded and know their areas."""
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    areas = np.asarray(areas)
    if areas.size == 0 or areas.max() == 0:
        raise ValueError("prompt_frame: the object is never visible")
    threshold = max(min_fraction * areas.max(), 1)
    return int(np.flatnonzero(areas >= threshold)[0])
