"""Previews: masks are coloured where they are, and every frame ends up in the GIF."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.previews import PALETTE, overlay, write_previews
from sam2_core.frames import ArrayFrames


def test_overlay_colours_only_inside_the_mask():
    frame = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    out = overlay(frame, [mask])
    assert (out[~mask] == 100).all()
    inside = out[8, 14].astype(float)
    expected = 0.45 * 100 + 0.55 * PALETTE[0]
    assert np.allclose(inside, expected, atol=1)
    assert not np.array_equal(out[5, 10], out[8, 14]), "the outline is drawn darker"


def test_write_previews_gif_has_every_frame_and_strip_exists(tmp_path):
    n = 7
    frames = np.zeros((n, 24, 32, 3), np.uint8)
    masks = {1: {t: np.zeros((24, 32), bool) for t in range(n)}}
    for t in range(n):
        masks[1][t][4:12, t : t + 8] = True
    gif_uri, png_uri = write_previews(
        ArrayFrames(frames), masks, str(tmp_path / "previews" / "v1"), title="v1"
    )
    gif = Image.open(gif_uri)
    assert gif.n_frames == n
    strip = Image.open(io.BytesIO(open(png_uri, "rb").read()))
    assert strip.width == 6 * 320, "six evenly spaced frames"
    assert strip.height == 24 * 10, (
        "small videos are enlarged by a whole factor (32 px wide -> 320)"
    )
