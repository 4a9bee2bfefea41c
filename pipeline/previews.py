"""Previews a person would rather look at than read: each object's mask coloured over the video.

Per video: an animated GIF of every frame (downscaled) and a PNG strip of a few evenly spaced
frames, both written through fsspec so they can go to object storage like the tables.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from pipeline.storage import url_to_fs
from sam2_core.frames import FrameSource

# Distinct, saturated colours (RGB); object k gets PALETTE[k % len(PALETTE)] in id order.
PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)],
    dtype=np.float32,
)


def overlay(frame: np.ndarray, masks: list[np.ndarray], alpha: float = 0.55) -> np.ndarray:
    """Colour each mask over an H x W x 3 uint8 frame, with a darker outline; returns uint8."""
    out = frame.astype(np.float32)
    for k, mask in enumerate(masks):
        if mask is None or not mask.any():
            continue
        color = PALETTE[k % len(PALETTE)]
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        edge = mask & ~_erode(mask)
        out[edge] = color * 0.6
    return out.clip(0, 255).astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _fit(image: Image.Image, max_width: int, min_width: int = 320) -> Image.Image:
    if image.width < min_width:  # small videos: enlarge by a whole factor so pixels stay sharp
        k = -(-min_width // image.width)
        return image.resize((image.width * k, image.height * k), Image.NEAREST)
    if image.width <= max_width:
        return image
    h = max(1, round(image.height * max_width / image.width))
    return image.resize((max_width, h), Image.BILINEAR)


def render_previews(
    frames: FrameSource,
    masks: dict[int, dict[int, np.ndarray]],
    title: str = "",
    max_width: int = 480,
    strip_frames: int = 6,
) -> tuple[bytes, bytes]:
    """(GIF bytes, PNG strip bytes) for a video; ``masks[object_id][frame_index]`` are bool H x W."""
    object_ids = sorted(masks)
    n = len(frames)
    images = []
    for t in range(n):
        layer = [masks[oid].get(t) for oid in object_ids]
        images.append(_fit(Image.fromarray(overlay(frames[t], layer)), max_width))
    gif = io.BytesIO()
    images[0].save(gif, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0, optimize=False)

    picks = sorted({round(i * (n - 1) / max(strip_frames - 1, 1)) for i in range(min(strip_frames, n))})
    tiles = [images[t].copy() for t in picks]
    for t, tile in zip(picks, tiles):
        ImageDraw.Draw(tile).text((4, 4), f"{title} frame {t}".strip(), fill=(255, 255, 255))
    w, h = tiles[0].size
    strip = Image.new("RGB", (w * len(tiles), h))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * w, 0))
    png = io.BytesIO()
    strip.save(png, format="PNG")
    return gif.getvalue(), png.getvalue()


def write_previews(
    frames: FrameSource,
    masks: dict[int, dict[int, np.ndarray]],
    output_prefix: str,
    title: str = "",
    storage_options: dict | None = None,
) -> tuple[str, str]:
    """Write ``<prefix>.gif`` and ``<prefix>.png``; returns their URIs."""
    gif, png = render_previews(frames, masks, title=title)
    fs, path = url_to_fs(output_prefix, storage_options)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path + ".gif", "wb") as f:
        f.write(gif)
    with fs.open(path + ".png", "wb") as f:
        f.write(png)
    return output_prefix + ".gif", output_prefix + ".png"
