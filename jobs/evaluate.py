"""``python -m jobs evaluate``: score predicted masks against ground truth (J, F, J&F).

Prints a table (per object, per video, overall) and, with ``--json``, writes
the same scores as JSON (to a path or fsspec URL). Exit status: 0 scored;
1 an input could not be read or does not fit (the message says which).
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.argtypes import json_object, positive_float
from pipeline.evaluate import DEFAULT_BOUND_TH, SKIP_MODES, evaluate_uris
from pipeline.storage import url_to_fs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--predictions",
        required=True,
        help="a label run's output folder (committed units of masks/), a Parquet mask table, or a folder of them",
    )
    parser.add_argument(
        "--ground-truth",
        required=True,
        help="ground-truth mask table: a Parquet file or a folder of them "
        "(or an export folder, with --ground-truth-format)",
    )
    parser.add_argument(
        "--ground-truth-format",
        default=None,
        help="read --ground-truth as this export format: davis, coco, youtube-vis, sav, cvat, "
        "label-studio (e.g. a reviewed export)",
    )
    parser.add_argument(
        "--json", default=None, help="write the scores as JSON here (path or fsspec URL)"
    )
    parser.add_argument(
        "--skip",
        choices=SKIP_MODES,
        default="first-last",
        help="frames left out per object: first-last (DAVIS 2017 / SA-V, default), first-prompted, none",
    )
    parser.add_argument(
        "--bound-th",
        type=positive_float,
        default=DEFAULT_BOUND_TH,
        help="boundary tolerance: fraction of the image diagonal (default 0.008), or pixels if >= 1",
    )
    parser.add_argument(
        "--keep-absent-masks",
        action="store_true",
        help="score the stored mask of rows with present=false instead of treating them as empty",
    )
    parser.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        help="JSON object of fsspec storage options",
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = evaluate_uris(
            args.predictions,
            args.ground_truth,
            args.storage_options,
            ground_truth_format=args.ground_truth_format,
            skip=args.skip,
            bound_th=args.bound_th,
            absent_as_empty=not args.keep_absent_masks,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"evaluate: {err}", file=sys.stderr)
        return 1
    print(report.format_table())
    if args.json:
        fs, path = url_to_fs(args.json, args.storage_options)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent and not fs.exists(parent):
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "w") as handle:
            json.dump(report.to_dict(), handle, indent=2)
        print(f"scores written to {args.json}")
    return 0
