"""What an export says after a person reviewed it: its masks, read back with where each came from.

Each format module has a reader beside its writer (``read_<format>_review(root,
storage_options) -> ReviewedExport``). A reader keeps the format's own names for
objects: an object the export knows carries our ``object_id``; one a person
added in the tool has ``object_id`` None and the tool's name for it in
``label`` (a CVAT track, a Label Studio region, a DAVIS palette index), so its
masks on several frames stay one object. Masks are re-encoded with
``encode_mask``, so equal masks have equal ``rle`` text whatever wrote them.
The same readers give ground truth for ``jobs evaluate`` (:func:`reviewed_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.masks import MASK_SCHEMA, decode_mask, encode_mask, with_origin_columns


@dataclass(frozen=True)
class ReviewedMask:
    """One visible mask of one object on one frame; ``where`` names file and entry."""

    video_id: str
    frame_index: int
    object_id: int | None
    label: str
    height: int
    width: int
    rle: str
    area: int
    where: str

    @property
    def object_key(self) -> str:
        """Groups one object's masks: our id where known, else the tool's name for it."""
        return f"object {self.object_id}" if self.object_id is not None else self.label


@dataclass
class ReviewedExport:
    """Everything a reader found: the videos it saw (with the file that names each), the
    frames each video's files cover, and the visible masks. ``frame_steps``: per video whose
    files annotate only every s-th frame (SA-V), that s (absent: every frame)."""

    source: str
    videos: dict[str, str] = field(default_factory=dict)
    frames: dict[str, set[int]] = field(default_factory=dict)
    masks: list[ReviewedMask] = field(default_factory=list)
    frame_steps: dict[str, int] = field(default_factory=dict)

    def add_frame(self, video_id: str, frame_index: int, where: str) -> None:
        self.videos.setdefault(video_id, where)
        self.frames.setdefault(video_id, set()).add(frame_index)

    def add_mask(
        self,
        video_id: str,
        frame_index: int,
        object_id: int | None,
        label: str,
        mask: np.ndarray,
        where: str,
    ) -> None:
        """Record a bool H x W mask (an empty one only marks the frame as covered)."""
        self.add_frame(video_id, frame_index, where)
        counts, area, _ = encode_mask(mask)
        if area == 0:
            return
        height, width = mask.shape
        self.masks.append(
            ReviewedMask(
                video_id, frame_index, object_id, label, height, width, counts, area, where
            )
        )


def parse_object_id(value: object, where: str) -> int | None:
    """An ``object_id`` field as written by a person: blank means none; else a whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: object_id must be a whole number, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{where}: object_id must be a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{where}: object_id must not be negative, got {number}")
    return number


def union_masks(masks: list[ReviewedMask]) -> dict[tuple[str, str, int], np.ndarray]:
    """Bool masks keyed by (video_id, object_key, frame_index); masks of one object on one
    frame (a region split in two, say) are unioned."""
    out: dict[tuple[str, str, int], np.ndarray] = {}
    for mask in masks:
        key = (mask.video_id, mask.object_key, mask.frame_index)
        decoded = decode_mask(mask.rle, mask.height, mask.width)
        out[key] = out[key] | decoded if key in out else decoded
    return out


def reviewed_table(export: ReviewedExport, run_id: str = "reviewed") -> pa.Table:
    """The export as a mask table (MASK_SCHEMA), e.g. ground truth for ``jobs evaluate``:
    one row per (video, object, covered frame), empty where the object is not drawn.
    An object without our id takes its label's number when that is free in its video
    (a DAVIS palette index, a CVAT track id), else the next free id."""
    masks = union_masks(export.masks)
    sizes = {m.video_id: (m.height, m.width) for m in export.masks}
    rows = []
    for video_id in sorted(sizes):
        height, width = sizes[video_id]
        ids = ground_truth_ids(export.masks, video_id)
        for key, object_id in ids.items():
            frames = {f for v, k, f in masks if v == video_id and k == key}
            for frame_index in sorted(export.frames.get(video_id, set()) | frames):
                mask = masks.get((video_id, key, frame_index))
                if mask is None:
                    mask = np.zeros((height, width), bool)
                counts, area, bbox = encode_mask(mask)
                rows.append(
                    {
                        "video_id": video_id,
                        "object_id": object_id,
                        "frame_index": frame_index,
                        "height": height,
                        "width": width,
                        "rle": counts,
                        "area": area,
                        "bbox": list(bbox),
                        "score": None,
                        "present": area > 0,
                        "prompted": False,
                        "run_id": run_id,
                        "model": None,
                    }
                )
    table = with_origin_columns(pa.Table.from_pylist(rows, schema=MASK_SCHEMA))  # drawn: "prompt"
    return table.sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


def ground_truth_ids(masks: list[ReviewedMask], video_id: str) -> dict[str, int]:
    """Object key -> id in one video: known ids kept; a label that is a free number keeps
    it; other new objects get the next free ids in order of label."""
    keys = {m.object_key: m.object_id for m in masks if m.video_id == video_id}
    ids = {key: oid for key, oid in keys.items() if oid is not None}
    taken = set(ids.values())
    pending = []
    for key in sorted(k for k in keys if k not in ids):
        if key.isdigit() and int(key) not in taken:
            ids[key] = int(key)
            taken.add(int(key))
        else:
            pending.append(key)
    next_id = max(taken, default=0) + 1
    for key in pending:
        ids[key] = next_id
        next_id += 1
    return ids
