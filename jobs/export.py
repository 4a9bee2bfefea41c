"""``python -m jobs export``: write a label run's masks in an annotation format.

Formats: coco, youtube-vis, davis, sav, cvat, label-studio, yolo-seg (see
``pipeline.exports``). Exit status: 0 written; 1 the run, the format or the
destination could not be used (the message names which).
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import add_storage_options, other_storage_options, positive_int
from pipeline.exports import FORMATS, ExportOptions, export_run
from pipeline.exports.options import DEFAULT_FRAME_NAME
from pipeline.exports.reader import DEFAULT_BATCH_ROWS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a label run's --output folder (path or URL)")
    parser.add_argument("--format", required=True, help=f"one of: {', '.join(FORMATS)}")
    parser.add_argument("--dest", required=True, help="folder to write into (path or URL)")
    parser.add_argument(
        "--frame-name",
        default=DEFAULT_FRAME_NAME,
        help="file name or URL of a frame image, with {video_id} and {frame_index} "
        f"(default {DEFAULT_FRAME_NAME!r}; Label Studio tasks need URLs it can load)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_ROWS, help="rows per read batch"
    )
    add_storage_options(parser, "--dest-storage-options", "--dest")


def run(args: argparse.Namespace) -> int:
    dest_options = other_storage_options(args, "dest_storage_options")
    try:
        result = export_run(
            args.run,
            args.format,
            args.dest,
            storage_options=args.storage_options,
            dest_storage_options=dest_options,
            options=ExportOptions(frame_name=args.frame_name, batch_size=args.batch_size),
        )
    except (ValueError, FileNotFoundError, ImportError, KeyError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    print(
        f"{result.format}: {result.videos} videos, {result.items} {result.item_kind}, "
        f"{result.files} files in {result.dest} ({result.seconds:.1f} s)"
    )
    return 0
