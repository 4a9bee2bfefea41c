"""``python -m jobs preview``: look at any run's masks over its videos.

Writes ``<dest>/<video_id>.gif`` (or ``.mp4``) and a ``.png`` strip per video,
each mask coloured and labelled with its object id, plus ``review.parquet``
(the run's doubts, most doubtful first; see ``jobs review``). The videos are
found through the run's manifest (the one its summary.json names, or
``--manifest``). Run, videos and dest may be local or on object storage.
Exit status: 0 written; 1 an input could not be read.
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import add_storage_options, other_storage_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a label run's --output folder (path or URL)")
    parser.add_argument("--dest", required=True, help="folder to write into (path or URL)")
    parser.add_argument("--videos", nargs="+", default=None, help="video ids (default: all)")
    parser.add_argument(
        "--manifest", default=None, help="the run's manifest (default: named by summary.json)"
    )
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="default gif")
    add_storage_options(parser, "--dest-storage-options", "--dest")


def run(args: argparse.Namespace) -> int:
    from pipeline.previews import preview_run
    from pipeline.review import REVIEW_FILE, rank_run, write_review
    from pipeline.storage import join

    dest_options = other_storage_options(args, "dest_storage_options")
    try:
        result = preview_run(
            args.run,
            args.dest,
            videos=args.videos,
            manifest=args.manifest,
            video_format=args.format,
            storage_options=args.storage_options,
            dest_storage_options=dest_options,
        )
        review = write_review(
            rank_run(args.run, args.storage_options), join(args.dest, REVIEW_FILE), dest_options
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"preview failed: {error}", file=sys.stderr)
        return 1
    print(f"{len(result.videos)} videos, {len(result.files)} files in {args.dest}")
    print(f"doubts ranked in {review} (python -m jobs review --run {args.run} prints them)")
    return 0
