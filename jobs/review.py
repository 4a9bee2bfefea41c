"""``python -m jobs review``: rank a run's (video, object, frames) by doubt.

Writes ``review.parquet`` (default: into the run's folder) and prints the top
rows: low predicted IoU, IoU drops, area jumps, objects that vanish and return
(see ``pipeline.review``). Exit status: 0 written; 1 the run could not be read.
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import json_object, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a label run's --output folder (path or URL)")
    parser.add_argument(
        "--out", default=None, help="where to write the ranking (default RUN/review.parquet)"
    )
    parser.add_argument("--top", type=positive_int, default=10, help="rows to print (default 10)")
    parser.add_argument(
        "--storage-options", type=json_object, default=None, help="fsspec options (run and out)"
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.review import REVIEW_FILE, format_rows, rank_run, write_review
    from pipeline.storage import join

    try:
        table = rank_run(args.run, args.storage_options)
        out = write_review(table, args.out or join(args.run, REVIEW_FILE), args.storage_options)
    except (ValueError, FileNotFoundError) as error:
        print(f"review failed: {error}", file=sys.stderr)
        return 1
    print(format_rows(table, args.top))
    print(f"{table.num_rows} places to look, most doubtful first, written to {out}")
    return 0
