"""Hole filling and Meta's default post-processing settings for official names."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import torch

from sam2_core import build_meta, official_config, resolve_config
from sam2_core.postprocess import fill_small_holes


def _fill_by_flood(logits: np.ndarray, max_area: int) -> np.ndarray:
    """Reference: breadth-first flood fill of 8-connected background regions."""
    h, w = logits.shape
    background = logits <= 0
    seen = np.zeros_like(background)
    out = logits.copy()
    for i in range(h):
        for j in range(w):
            if not background[i, j] or seen[i, j]:
                continue
            region, queue = [], deque([(i, j)])
            seen[i, j] = True
            while queue:
                y, x = queue.popleft()
                region.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        v, u = y + dy, x + dx
                        if 0 <= v < h and 0 <= u < w and background[v, u] and not seen[v, u]:
                            seen[v, u] = True
                            queue.append((v, u))
            if len(region) <= max_area:
                for y, x in region:
                    out[y, x] = 0.1
    return out


def test_fill_small_holes_equals_a_flood_fill():
    rng = np.random.default_rng(0)
    for trial in range(30):
        logits = rng.normal(size=(2, 1, 22, 29)).astype(np.float32) + (0.9 if trial % 2 else 0.3)
        got = fill_small_holes(torch.from_numpy(logits), 8).numpy()
        for b in range(2):
            np.testing.assert_array_equal(got[b, 0], _fill_by_flood(logits[b, 0], 8))


def test_fill_small_holes_keeps_large_and_edge_touching_background():
    x = torch.full((1, 1, 20, 20), 5.0)
    x[0, 0, 2:4, 2:4] = -1  # 4 pixels: filled
    x[0, 0, 10:13, 10:13] = -1  # 9 pixels: kept
    x[0, 0, :, 17:] = -1  # a large band: kept
    y = fill_small_holes(x, 8)
    assert (y[0, 0, 2:4, 2:4] == 0.1).all()
    assert (y[0, 0, 10:13, 10:13] == -1).all() and (y[0, 0, :, 17:] == -1).all()
    assert torch.equal(fill_small_holes(x, 0), x)


def test_official_names_get_metas_default_postprocessing():
    plain = official_config("sam2.1_hiera_tiny")
    built = resolve_config("sam2.1_hiera_tiny")
    assert not plain.decoder.dynamic_multimask_via_stability and plain.tracking.fill_hole_area == 0
    assert built.decoder.dynamic_multimask_via_stability
    assert built.tracking.binarize_mask_from_pts_for_mem_enc and built.tracking.fill_hole_area == 8
    assert resolve_config("sam2.1_hiera_tiny", apply_postprocessing=False) == plain
    # Post-processing changes behaviour only, never the checkpoint layout.
    assert build_meta(built).state_dict().keys() == build_meta(plain).state_dict().keys()
    assert replace(built, decoder=plain.decoder, tracking=plain.tracking) == plain
