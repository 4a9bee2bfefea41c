"""``python -m jobs demo``: the newcomer's run on the embedded default.

Writes sample videos with ground truth (synthetic, like those the bundled model
was trained on), labels them on local Ray with the bundled model, scores the
masks (J&F), renders coloured previews, and prints where everything is.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from jobs.argtypes import non_negative_int, positive_int
from jobs.label import add_option

DEFAULT_OUTPUT = "out/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"folder or URI for everything the demo writes (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--videos", type=positive_int, default=4, help="number of sample videos (default 4)"
    )
    parser.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=0,
        help="seed of the first sample video (default 0: held-out seeds)",
    )
    add_option(parser, "--workers", default=2, help="Ray workers (default 2)")
    add_option(parser, "--num-cpus")
    add_option(
        parser,
        "--storage-options",
        help="JSON object of fsspec storage options when --output is remote",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.coordinator import RunConfig, run_labeling
    from pipeline.evaluate import evaluate_uris
    from pipeline.masks import masks_from_table
    from pipeline.previews import write_previews
    from pipeline.sink import read_masks
    from pipeline.storage import url_to_fs
    from pipeline.synthetic_io import write_synthetic_dataset
    from pipeline.video import open_video
    from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH, DEMO_SYNTHETIC_CONFIG

    if args.videos < 1:
        print("demo: --videos must be at least 1")
        return 1
    storage = args.storage_options
    root = args.output.rstrip("/")
    if "://" not in root:
        root = os.path.abspath(root)
    seeds = range(args.first_seed, args.first_seed + args.videos)

    print(f"[1/4] writing {args.videos} sample videos with ground truth under {root}/data")
    data = write_synthetic_dataset(f"{root}/data", seeds, DEMO_SYNTHETIC_CONFIG, storage)

    print(f"[2/4] labeling them on local Ray with the bundled model ({args.workers} workers)")
    fs, labels = url_to_fs(f"{root}/labels", storage)
    if fs.exists(labels):  # an earlier demo's masks, perhaps from an older bundled model
        fs.rm(labels, recursive=True)
    started = time.perf_counter()
    result = run_labeling(
        RunConfig(
            manifest=data.manifest,
            output=f"{root}/labels",
            model=str(DEMO_CONFIG_PATH),
            checkpoint=str(DEMO_CHECKPOINT_PATH),
            workers=args.workers,
            local_num_cpus=args.num_cpus,
            storage_options=storage,
        )
    )
    wall = time.perf_counter() - started

    print("[3/4] scoring the masks against the ground truth (J&F)")
    report = evaluate_uris(f"{root}/labels", data.ground_truth, storage)
    with _open(f"{root}/evaluation.json", storage) as f:
        f.write(json.dumps(report.to_dict(), indent=2))

    print("[4/4] rendering previews")
    table = read_masks(f"{root}/labels", storage)
    by_video: dict[str, dict[int, dict[int, object]]] = {}
    for (vid, oid, t), mask in masks_from_table(table).items():
        by_video.setdefault(vid, {}).setdefault(oid, {})[t] = mask
    previews = []
    for vid, uri in zip(data.video_ids, data.videos):
        with open_video(uri, storage) as frames:
            gif, _ = write_previews(
                frames,
                by_video.get(vid, {}),
                f"{root}/previews/{vid}",
                title=vid,
                storage_options=storage,
            )
        previews.append(gif)

    s = result.summary
    objects = len({(v, o) for v, d in by_video.items() for o in d})
    print()
    print("Demo finished.")
    print(f"  mask table : {root}/labels/masks/   (pyarrow.dataset.dataset(...) reads it)")
    print(f"  summary    : {root}/labels/summary.json")
    print(f"  evaluation : {root}/evaluation.json")
    print(f"  previews   : {root}/previews/  ({len(previews)} GIFs + PNG strips)")
    print(
        f"  videos {len(data.videos)}, objects {objects}, frames {s.frames}, rows {s.rows}, "
        f"failed units {s.failed}, rejected {s.rejected}"
    )
    print(
        f"  throughput {s.frames / wall:.1f} frames/s end to end ({wall:.1f} s including Ray start)"
    )
    print(
        f"  J&F {report.jf:.3f}  (J {report.j:.3f}, F {report.f:.3f}) against the samples' ground truth"
    )
    return result.exit_code


def _open(uri: str, storage_options: dict | None):
    from pipeline.storage import url_to_fs

    fs, path = url_to_fs(uri, storage_options)
    return fs.open(path, "w")
