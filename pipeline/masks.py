"""Per-frame mask rows: the output table schema and COCO RLE encoding/decoding.

Masks are stored as COCO compressed RLE (pycocotools), ``counts`` as ASCII
text, so a row is a few hundred bytes instead of H*W. pycocotools does no
bounds checking when decoding, so every RLE read from outside is checked
here (:func:`validate_rle`) before it reaches pycocotools.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pycocotools import mask as mask_utils

MASK_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("object_id", pa.int64(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("rle", pa.string(), nullable=False),  # COCO compressed counts (ASCII)
        pa.field("area", pa.int64(), nullable=False),  # pixels inside the mask
        pa.field("bbox", pa.list_(pa.float64(), 4), nullable=False),  # x, y, w, h; zeros if empty
        pa.field("score", pa.float32()),  # predicted IoU of the mask
        pa.field("present", pa.bool_()),  # object judged visible on this frame
        pa.field("prompted", pa.bool_()),  # this frame carried a prompt for this object
        pa.field("run_id", pa.string()),
        pa.field("model", pa.string()),
        # the tracker's object-score logit (> 0: present); null where the model gave none
        pa.field("object_score_logit", pa.float32()),
        pa.field("source", pa.string(), nullable=False),  # one of SOURCES
        pa.field("category", pa.string()),  # the object's class name; null when unknown
        pa.field("detection_score", pa.float32()),  # the detector's score; null without one
    ]
)
# Columns added after the first tables were written, and what older tables read as instead.
ORIGIN_DEFAULTS = {
    "object_score_logit": None,
    "source": "prompt",
    "category": None,
    "detection_score": None,
}


SOURCES = ("prompt", "auto", "detector")  # how an object came to be labeled


@dataclass(frozen=True)
class ObjectOrigin:
    """Where one object came from, written on every row of it so a reviewer can sort by doubt.

    source: "prompt" (a manifest named it), "auto" (found by automatic mask generation) or
    "detector" (a detector's box, live or precomputed); category: its class name, None when
    unknown; detection_score: the detector's score for the detection that started it, None
    when no detector was involved.
    """

    source: str = "prompt"
    category: str | None = None
    detection_score: float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"ObjectOrigin.source must be one of {SOURCES}, got {self.source!r}")


class MaskRow(NamedTuple):
    """One MASK_SCHEMA row (fields in schema order): an object's encoded mask on one frame."""

    video_id: str
    object_id: int
    frame_index: int
    height: int
    width: int
    rle: str
    area: int
    bbox: tuple[float, float, float, float]
    score: float
    present: bool
    prompted: bool
    run_id: str
    model: str
    object_score_logit: float | None
    source: str
    category: str | None
    detection_score: float | None


def mask_row(
    video_id: str,
    object_id: int,
    frame_index: int,
    mask: np.ndarray,
    *,
    score: float,
    present: bool,
    prompted: bool,
    run_id: str,
    model: str,
    object_score_logit: float | None = None,
    origin: ObjectOrigin = ObjectOrigin(),
) -> MaskRow:
    """Encode an H x W mask (nonzero = inside) of one object on one frame as a row; the size
    comes from the mask. Callers encode frame by frame, so whole videos are never held decoded.
    ``object_score_logit``: the model's object score on this frame (None where it gave none);
    ``origin``: where the object came from (its source, category and detection score)."""
    rle, area, bbox = encode_mask(mask)
    height, width = np.shape(mask)
    return MaskRow(
        video_id=video_id,
        object_id=int(object_id),
        frame_index=int(frame_index),
        height=int(height),
        width=int(width),
        rle=rle,
        area=int(area),
        bbox=bbox,
        score=float(score),
        present=bool(present),
        prompted=bool(prompted),
        run_id=run_id,
        model=model,
        object_score_logit=None if object_score_logit is None else float(object_score_logit),
        source=origin.source,
        category=origin.category,
        detection_score=(None if origin.detection_score is None else float(origin.detection_score)),
    )


def mask_table(rows: Iterable[MaskRow]) -> pa.Table:
    """Rows as a MASK_SCHEMA table, in the order given."""
    columns = list(zip(*rows)) or [()] * len(MASK_SCHEMA)
    return pa.table(
        {name: list(values) for name, values in zip(MASK_SCHEMA.names, columns)},
        schema=MASK_SCHEMA,
    )


def with_origin_columns(table: pa.Table) -> pa.Table:
    """``table`` with the columns of ORIGIN_DEFAULTS it lacks added, and a null ``source`` read
    as "prompt": tables written before those columns existed (an older run's output) read as
    MASK_SCHEMA tables, their objects prompted, category, logit and detection score unknown.
    Other columns are left as they are (a caller casting to MASK_SCHEMA checks them)."""
    for name, default in ORIGIN_DEFAULTS.items():
        field = MASK_SCHEMA.field(name)
        if name not in table.column_names:
            column = pa.array([default] * table.num_rows, type=field.type)
            table = table.append_column(field, column)
        elif default is not None and table.column(name).null_count:
            filled = pc.fill_null(table.column(name), pa.scalar(default, field.type))
            table = table.set_column(table.column_names.index(name), field, filled)
    return table


def encode_mask(mask: np.ndarray) -> tuple[str, int, tuple[float, float, float, float]]:
    """Encode an H x W mask (bool, or nonzero = inside) as (COCO counts text, area, bbox x,y,w,h)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects an H x W mask, got shape {mask.shape}")
    binary = np.asfortranarray(mask != 0, dtype=np.uint8)
    rle = mask_utils.encode(binary)
    area = int(mask_utils.area(rle))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return rle["counts"].decode("ascii"), area, (x, y, w, h)


def decode_mask(rle: str, height: int, width: int) -> np.ndarray:
    """Decode COCO compressed counts into an H x W bool mask (checked before pycocotools sees it)."""
    validate_rle(rle, height, width)
    with warnings.catch_warnings():
        # pycocotools' Cython decode trips a NumPy 2 "copy keyword" DeprecationWarning; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(
            {"size": [int(height), int(width)], "counts": rle.encode("ascii")}
        )
    return decoded.astype(bool)


def rle_counts(counts: str) -> list[int]:
    """Run lengths from COCO's compressed counts string (LEB128-like, 6 bits a character).

    Each character holds 5 payload bits plus a continuation bit; the last
    character of a value carries its sign; from the fourth value on, values are
    stored as differences to the value two places earlier.
    """
    runs: list[int] = []
    value, shift = 0, 0
    for position, char in enumerate(counts):
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"RLE counts: invalid character {char!r} at position {position}")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise ValueError("RLE counts: text ends in the middle of a value")
    return runs


def validate_rle(counts: str, height: int, width: int) -> None:
    """Raise ValueError unless ``counts`` is a well-formed RLE of exactly height x width pixels."""
    if not isinstance(counts, str) or not counts:
        raise ValueError(f"RLE counts must be a non-empty string, got {counts!r:.60}")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"RLE size: {name} must be a positive integer, got {value!r}")
    runs = rle_counts(counts)
    if any(run < 0 for run in runs):
        raise ValueError("RLE counts: negative run length")
    total = sum(runs)
    if total != int(height) * int(width):
        raise ValueError(
            f"RLE counts cover {total} pixels but size {height}x{width} has {int(height) * int(width)}"
        )


def masks_from_table(table: pa.Table) -> dict[tuple[str, int, int], np.ndarray]:
    """Turn mask rows back into bool masks keyed by (video_id, object_id, frame_index)."""
    columns = table.select(["video_id", "object_id", "frame_index", "height", "width", "rle"])
    out: dict[tuple[str, int, int], np.ndarray] = {}
    for video_id, object_id, frame_index, height, width, rle in zip(
        *(column.to_pylist() for column in columns.columns)
    ):
        key = (video_id, int(object_id), int(frame_index))
        if key in out:
            raise ValueError(f"mask table holds more than one row for {key}")
        out[key] = decode_mask(rle, height, width)
    return out
