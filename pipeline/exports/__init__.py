"""Export a label run's committed masks to annotation formats for review and training.

``export_run(run, format, dest)`` reads the run's Parquet dataset video by
video in pyarrow batches (never the whole table; see ``reader.py``) and
writes to any fsspec destination. One module per format.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from pipeline.exports.coco import (
    export_coco,
    export_youtube_vis,
    read_coco_review,
    read_youtube_vis_review,
)
from pipeline.exports.cvat import export_cvat, read_cvat_review
from pipeline.exports.davis import export_davis, read_davis, read_davis_review
from pipeline.exports.destination import Destination
from pipeline.exports.label_studio import export_label_studio, read_label_studio_review
from pipeline.exports.options import ExportOptions
from pipeline.exports.reader import RunNotFoundError, RunReader
from pipeline.exports.reviewed import ReviewedExport, ReviewedMask, reviewed_table
from pipeline.exports.sav import export_sav, read_sav_review
from pipeline.exports.yolo_seg import export_yolo_seg

Exporter = Callable[[RunReader, Destination, ExportOptions], int]

FORMATS: dict[str, tuple[Exporter, str]] = {
    "coco": (export_coco, "annotations"),
    "youtube-vis": (export_youtube_vis, "tracks"),
    "davis": (export_davis, "PNG frames"),
    "sav": (export_sav, "video files"),
    "cvat": (export_cvat, "mask shapes"),
    "label-studio": (export_label_studio, "brush results"),
    "yolo-seg": (export_yolo_seg, "polygons"),
}

Reader = Callable[[str, "dict | None"], ReviewedExport]

# Formats read back exactly (a reviewed export, or ground truth); yolo-seg polygons are not.
READERS: dict[str, Reader] = {
    "coco": read_coco_review,
    "youtube-vis": read_youtube_vis_review,
    "davis": read_davis_review,
    "sav": read_sav_review,
    "cvat": read_cvat_review,
    "label-studio": read_label_studio_review,
}


@dataclass(frozen=True)
class ExportResult:
    format: str
    dest: str
    videos: int
    items: int  # what the format counts (see FORMATS: annotations, PNGs, polygons ...)
    item_kind: str
    files: int
    seconds: float


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; known formats: {', '.join(FORMATS)}")
    return name


def check_readable_format(name: str) -> str:
    if name not in READERS:
        raise ValueError(
            f"cannot read format {name!r} back; readable formats: {', '.join(READERS)}"
        )
    return name


def read_export(root: str, format: str, storage_options: dict | None = None) -> ReviewedExport:
    """The masks of an export folder in ``format`` (as written by ``export_run``, perhaps
    edited since), each with the file and entry it came from."""
    return READERS[check_readable_format(format)](root, storage_options)


def read_export_table(root: str, format: str, storage_options: dict | None = None) -> pa.Table:
    """An export folder as a mask table (MASK_SCHEMA), e.g. ground truth for evaluation."""
    return reviewed_table(read_export(root, format, storage_options), run_id=format)


def export_run(
    run_uri: str,
    format: str,
    dest_uri: str,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
    options: ExportOptions | None = None,
) -> ExportResult:
    """Export the committed units of ``run_uri`` as ``format`` into ``dest_uri``.

    Raises ValueError for an unknown format and RunNotFoundError (a
    FileNotFoundError) naming the folder when it holds no committed units.
    """
    exporter, kind = FORMATS[check_format(format)]
    options = options or ExportOptions()
    start = time.perf_counter()
    reader = RunReader(run_uri, storage_options, batch_size=options.batch_size)
    dest = Destination(dest_uri, dest_storage_options)
    items = exporter(reader, dest, options)
    return ExportResult(
        format=format,
        dest=dest_uri,
        videos=len(reader.video_ids()),
        items=items,
        item_kind=kind,
        files=dest.files_written,
        seconds=time.perf_counter() - start,
    )


__all__ = [
    "FORMATS",
    "READERS",
    "ExportOptions",
    "ExportResult",
    "ReviewedExport",
    "ReviewedMask",
    "RunNotFoundError",
    "RunReader",
    "check_format",
    "check_readable_format",
    "export_run",
    "read_davis",
    "read_export",
    "read_export_table",
]
