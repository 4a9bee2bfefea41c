"""Previews a person would rather look at than read: each object's mask coloured over the video.

Per video: an animated GIF (or an H.264 MP4) of every frame (downscaled) and a PNG strip of a
few evenly spaced frames, each mask labelled with its object id, written through fsspec so
they can go to object storage like the tables. :func:`preview_run` does this for any run,
finding the videos through the run's manifest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from pipeline.storage import join, url_to_fs
from sam2_core.frames import FrameSource

# Distinct, saturated colours (RGB); object k gets PALETTE[k % len(PALETTE)] in id order.
PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
    ],
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


def _draw_ids(image: Image.Image, layer: list, object_ids: list[int], source_width: int) -> None:
    """Write each shown object's id at its mask's centre (scaled to the fitted image)."""
    scale = image.width / source_width
    draw = ImageDraw.Draw(image)
    for object_id, mask in zip(object_ids, layer):
        if mask is None or not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        x, y = float(xs.mean()) * scale, float(ys.mean()) * scale
        text = str(object_id)
        draw.text((x - 3 * len(text) + 1, y - 5 + 1), text, fill=(0, 0, 0))
        draw.text((x - 3 * len(text), y - 5), text, fill=(255, 255, 255))


def _frames_with_masks(
    frames: FrameSource, masks: dict[int, dict[int, np.ndarray]], max_width: int
) -> list[Image.Image]:
    object_ids = sorted(masks)
    images = []
    for t in range(len(frames)):
        frame = frames[t]
        layer = [masks[oid].get(t) for oid in object_ids]
        image = _fit(Image.fromarray(overlay(frame, layer)), max_width)
        _draw_ids(image, layer, object_ids, frame.shape[1])
        images.append(image)
    return images


def _mp4(images: list[Image.Image], fps: int = 12) -> bytes:
    """H.264 MP4 of the frames (sizes rounded down to even numbers, as yuv420p needs)."""
    import av

    width, height = images[0].width // 2 * 2, images[0].height // 2 * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(
                np.asarray(image.crop((0, 0, width, height))), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def render_previews(
    frames: FrameSource,
    masks: dict[int, dict[int, np.ndarray]],
    title: str = "",
    max_width: int = 480,
    strip_frames: int = 6,
    video_format: str = "gif",
) -> tuple[bytes, bytes]:
    """(GIF or MP4 bytes, PNG strip bytes) for a video, object ids drawn on their masks;
    ``masks[object_id][frame_index]`` are bool H x W."""
    images = _frames_with_masks(frames, masks, max_width)
    n = len(images)
    if video_format == "mp4":
        movie = _mp4(images)
    else:
        gif = io.BytesIO()
        images[0].save(
            gif,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=80,
            loop=0,
            optimize=False,
        )
        movie = gif.getvalue()

    picks = sorted(
        {round(i * (n - 1) / max(strip_frames - 1, 1)) for i in range(min(strip_frames, n))}
    )
    tiles = [images[t].copy() for t in picks]
    for t, tile in zip(picks, tiles):
        ImageDraw.Draw(tile).text((4, 4), f"{title} frame {t}".strip(), fill=(255, 255, 255))
    w, h = tiles[0].size
    strip = Image.new("RGB", (w * len(tiles), h))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * w, 0))
    png = io.BytesIO()
    strip.save(png, format="PNG")
    return movie, png.getvalue()


def write_previews(
    frames: FrameSource,
    masks: dict[int, dict[int, np.ndarray]],
    output_prefix: str,
    title: str = "",
    storage_options: dict | None = None,
    video_format: str = "gif",
) -> tuple[str, str]:
    """Write ``<prefix>.gif`` (or ``.mp4``) and ``<prefix>.png``; returns their URIs."""
    movie, png = render_previews(frames, masks, title=title, video_format=video_format)
    fs, path = url_to_fs(output_prefix, storage_options)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(f"{path}.{video_format}", "wb") as f:
        f.write(movie)
    with fs.open(path + ".png", "wb") as f:
        f.write(png)
    return f"{output_prefix}.{video_format}", output_prefix + ".png"


VIDEO_FORMATS = ("gif", "mp4")


@dataclass
class _EncodedMasks:
    """One object's masks kept as RLE and decoded one frame at a time (``.get`` as a dict)."""

    height: int
    width: int
    rles: dict[int, str] = field(default_factory=dict)

    def get(self, frame_index: int) -> np.ndarray | None:
        from pipeline.masks import decode_mask

        rle = self.rles.get(frame_index)
        return None if rle is None else decode_mask(rle, self.height, self.width)


@dataclass(frozen=True)
class PreviewResult:
    files: tuple[str, ...]
    videos: tuple[str, ...]
    manifest: str


def preview_run(
    run_uri: str,
    dest: str,
    videos: list[str] | None = None,
    manifest: str | None = None,
    video_format: str = "gif",
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
) -> PreviewResult:
    """Previews of a run's committed masks, one video at a time: ``<dest>/<video_id>.gif``
    (or ``.mp4``) and ``.png``. The videos are found through the run's manifest (the one
    its summary.json names, or ``manifest``); ``videos`` limits them to these ids."""
    from pipeline.exports import RunReader
    from pipeline.exports.destination import safe_name
    from pipeline.exports.reader import visible
    from pipeline.runs import run_jobs
    from pipeline.video import open_video

    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"preview format {video_format!r}: one of {', '.join(VIDEO_FORMATS)}")
    reader = RunReader(run_uri, storage_options)
    manifest, jobs = run_jobs(run_uri, storage_options, manifest)
    chosen = reader.video_ids() if videos is None else list(videos)
    unknown = [v for v in chosen if v not in reader.video_ids()]
    if unknown:
        raise ValueError(f"{run_uri}: no committed masks for video(s) {unknown}")
    missing = [v for v in chosen if v not in jobs]
    if missing:
        raise ValueError(f"video(s) {missing} of {run_uri} are not in the manifest {manifest}")
    files: list[str] = []
    for video_id in chosen:
        rows = reader.video(video_id)
        masks: dict[int, _EncodedMasks] = {}
        for object_id, track in rows.by_object():
            encoded = masks[object_id] = _EncodedMasks(rows.height, rows.width)
            for row in track.select(["frame_index", "rle", "area", "present"]).to_pylist():
                if visible(row["present"], row["area"]):
                    encoded.rles[row["frame_index"]] = row["rle"]
        with open_video(jobs[video_id].video, storage_options) as frames:
            files.extend(
                write_previews(
                    frames,
                    masks,
                    join(dest, safe_name(video_id)),
                    title=video_id,
                    storage_options=dest_storage_options,
                    video_format=video_format,
                )
            )
    return PreviewResult(tuple(files), tuple(chosen), manifest)
