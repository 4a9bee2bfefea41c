"""DAVIS / YouTube-VOS indexed PNGs, and the inverse: a ground-truth reader.

Layout: ``Annotations/<video_id>/<frame:05d>.png``, one palette PNG for every
frame 0..last, pixel value = object index (0 background), plus
``object_ids.json`` mapping each video's indices back to our object ids.
Indices are 1..N in object-id order within a video (N <= 255).

One pixel holds one object, so overlapping masks need a rule. Meta's
predictor (``non_overlap_masks``) keeps, per pixel, the object with the
highest mask logit; the table keeps no logits, only each row's ``score``
(the mask decoder's predicted IoU), so here **the object with the higher
predicted IoU wins the whole overlap** (ties: the smaller object id; a
missing score counts as lowest). Without overlaps the PNGs equal the masks.
"""

from __future__ import annotations

import io
import json
import posixpath

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import ExportOptions
from pipeline.exports.reader import RunReader, visible
from pipeline.exports.reviewed import ReviewedExport, parse_object_id, reviewed_table
from pipeline.masks import decode_mask
from pipeline.storage import url_to_fs

ANNOTATIONS_DIR = "Annotations"
OBJECT_IDS_FILE = "object_ids.json"
MAX_OBJECTS = 255


def davis_palette() -> list[int]:
    """The PASCAL VOC / DAVIS colour map (index bits spread over R, G, B), 256 x RGB."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.extend((r, g, b))
    return palette


_PALETTE = davis_palette()


def paint_frame(
    height: int, width: int, masks: list[tuple[int, float | None, np.ndarray]]
) -> np.ndarray:
    """Indexed H x W uint8 image from (index, score, bool mask) triples under the
    non-overlap rule: higher score wins, ties to the smaller index, None lowest."""

    def priority(item: tuple[int, float | None, np.ndarray]) -> tuple[float, int]:
        index, score, _ = item
        return (-np.inf if score is None else float(score), -index)

    canvas = np.zeros((height, width), np.uint8)
    for index, _, mask in sorted(masks, key=priority):  # lowest priority first, winner last
        canvas[mask] = index
    return canvas


def png_bytes(indexed: np.ndarray) -> bytes:
    image = Image.fromarray(indexed, mode="P")
    image.putpalette(_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def export_davis(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """Write the PNGs, one video's rows at a time; returns the number of PNGs."""
    mapping: dict[str, dict[str, int]] = {}
    count = 0
    for video in reader.videos():
        folder = posixpath.join(ANNOTATIONS_DIR, safe_name(video.video_id))
        object_ids = video.object_ids()
        if len(object_ids) > MAX_OBJECTS:
            raise ValueError(
                f"video {video.video_id!r} has {len(object_ids)} objects; an indexed PNG holds "
                f"at most {MAX_OBJECTS}"
            )
        index_of = {object_id: i + 1 for i, object_id in enumerate(object_ids)}
        mapping[video.video_id] = {str(i): object_id for object_id, i in index_of.items()}
        frames = dict(video.by_frame())
        for frame_index in range(video.frame_count):
            masks = []
            frame = frames.pop(frame_index, None)
            for row in [] if frame is None else frame.to_pylist():
                if visible(row["present"], row["area"]):
                    mask = decode_mask(row["rle"], video.height, video.width)
                    masks.append((index_of[row["object_id"]], row["score"], mask))
            indexed = paint_frame(video.height, video.width, masks)
            dest.write_bytes(f"{folder}/{frame_index:05d}.png", png_bytes(indexed))
            count += 1
    dest.write_json(OBJECT_IDS_FILE, mapping)
    return count


def read_davis(root: str, storage_options: dict | None = None, run_id: str = "davis") -> pa.Table:
    """Read a DAVIS-style folder (``Annotations/<video>/<frame>.png``, or the video
    folders directly) into a mask table (MASK_SCHEMA): one row per (video, object,
    frame) for every object index seen in the video, empty where it is absent.
    Object ids come from ``object_ids.json`` when present, else the pixel index."""
    return reviewed_table(read_davis_review(root, storage_options), run_id)


def read_davis_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """The PNGs' masks; a pixel index that ``object_ids.json`` maps is our object,
    another one is an object the reviewer added (label: the index)."""
    fs, base = url_to_fs(root, storage_options)
    folder = posixpath.join(base, ANNOTATIONS_DIR)
    if not fs.isdir(folder):
        folder = base
    if not fs.isdir(folder):
        raise FileNotFoundError(f"{root}: no such folder")
    mapping: dict[str, dict[str, int]] = {}
    mapping_path = posixpath.join(base, OBJECT_IDS_FILE)
    if fs.exists(mapping_path):
        with fs.open(mapping_path, "rb") as handle:
            mapping = json.loads(handle.read())
    export = ReviewedExport(root)
    for video_dir in sorted(fs.ls(folder, detail=False)):
        if not fs.isdir(video_dir):
            continue
        video_id = posixpath.basename(video_dir.rstrip("/"))
        ids = mapping.get(video_id, {})
        frames = sorted(p for p in fs.ls(video_dir, detail=False) if p.lower().endswith(".png"))
        for path in frames:
            _read_png(fs, path, video_id, ids, export)
    if not export.videos:
        raise FileNotFoundError(f"{root}: no DAVIS video folders with PNG frames found")
    return export


def _read_png(fs, path: str, video_id: str, ids: dict, export: ReviewedExport) -> None:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    if not stem.isdigit():
        raise ValueError(f"{path}: a DAVIS frame is named by its frame number, e.g. 00000.png")
    with fs.open(path, "rb") as handle, Image.open(handle) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected an indexed (palette) PNG, got mode {image.mode}")
        indexed = np.array(image)
    frame_index = int(stem)
    export.add_frame(video_id, frame_index, path)
    for index in np.unique(indexed).tolist():
        if index == 0:
            continue
        object_id = parse_object_id(ids.get(str(index)), f"{OBJECT_IDS_FILE} {video_id}.{index}")
        export.add_mask(
            video_id, frame_index, object_id, str(index), indexed == index, f"{path} index {index}"
        )
