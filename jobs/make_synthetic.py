"""``python -m jobs make-synthetic``: write synthetic videos with ground truth and a manifest.

The dataset (``videos/``, ``ground_truth/``, ``manifest.jsonl`` under
``--output``) is reproducible from the seeds and options. Exit status: 0
written; 1 bad options or the output could not be written.
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import int_in, json_object, non_negative_int, positive_int
from sam2_core.synthetic import SyntheticConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SyntheticConfig()
    parser.add_argument("--output", required=True, help="output folder (path or fsspec URL)")
    parser.add_argument(
        "--num-videos", type=positive_int, default=4, help="videos to generate (default 4)"
    )
    parser.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=0,
        help="seed of the first video; the rest follow (default 0)",
    )
    parser.add_argument(
        "--height",
        type=positive_int,
        default=defaults.height,
        help=f"frame height (default {defaults.height})",
    )
    parser.add_argument(
        "--width",
        type=positive_int,
        default=defaults.width,
        help=f"frame width (default {defaults.width})",
    )
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=defaults.num_frames,
        help=f"frames per video (default {defaults.num_frames})",
    )
    parser.add_argument(
        "--min-objects",
        type=positive_int,
        default=defaults.min_objects,
        help=f"default {defaults.min_objects}",
    )
    parser.add_argument(
        "--max-objects",
        type=positive_int,
        default=defaults.max_objects,
        help=f"default {defaults.max_objects}",
    )
    parser.add_argument(
        "--fps", type=positive_int, default=24, help="frame rate of the MP4 files (default 24)"
    )
    parser.add_argument(
        "--crf",
        type=int_in(0, 51),
        default=14,
        help="x264 constant-quality factor, lower is better (default 14)",
    )
    parser.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        help="JSON object of fsspec storage options",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.synthetic_io import write_synthetic_dataset

    if args.first_seed < 0:
        print(f"make-synthetic: --first-seed must be >= 0, got {args.first_seed}", file=sys.stderr)
        return 1
    try:
        config = SyntheticConfig(
            height=args.height,
            width=args.width,
            num_frames=args.frames,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
        )
        dataset = write_synthetic_dataset(
            args.output,
            range(args.first_seed, args.first_seed + args.num_videos),
            config,
            args.storage_options,
            fps=args.fps,
            crf=args.crf,
        )
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"make-synthetic: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(dataset.videos)} videos")
    print(f"manifest:     {dataset.manifest}")
    print(f"ground truth: {dataset.ground_truth}")
    return 0
