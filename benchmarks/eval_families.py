"""J&F of a model on synthetic scene families (:mod:`sam2_core.synthetic_families`): the
held-out families measure whether it tracks scenes it never trained on, ``blobs`` seeds 0..19
is the demo model's held-out set.

Each video is generated from its seed at the family's size, each object prompted with one
click (``first_click`` on ``prompt_frame``, as the ``make-synthetic`` manifest does), tracked
in process and scored with ``pipeline.evaluate`` (DAVIS conventions).

    python -m benchmarks.eval_families                      # the bundled demo model
    python -m benchmarks.eval_families --checkpoint runs/x/model.pt --config runs/x/config.json \\
        --families shapes-on-texture,night --videos 20 --json out.json
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import environment, positive_int, write_json
from pipeline.synthetic_eval import family_jf
from sam2_core.build import build_model
from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH
from sam2_core.synthetic_families import FAMILIES, held_out_families

DEFAULT_FAMILIES = ("blobs", *held_out_families())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG_PATH), help="model config file")
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT_PATH), help="weights")
    parser.add_argument(
        "--families",
        default=",".join(DEFAULT_FAMILIES),
        help=f"comma-separated; known: {', '.join(FAMILIES)} (default: blobs and the held-out ones)",
    )
    parser.add_argument("--videos", type=positive_int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--table", action="store_true", help="print each family's per-object table")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    model = build_model(args.config, args.checkpoint)
    seeds = range(args.first_seed, args.first_seed + args.videos)
    results = {}
    for family in families:
        t0 = time.time()
        report = family_jf(model, family, seeds)
        if args.table:
            print(report.format_table())
        results[family] = {
            "held_out": FAMILIES[family].held_out,
            "J&F": report.jf,
            "J": report.j,
            "F": report.f,
            "video_mean_J&F": report.video_mean_jf,
            "videos": len(report.videos),
            "objects": len(report.objects),
            "seconds": round(time.time() - t0, 1),
        }
        r = results[family]
        print(
            f"{family:<18} J&F={r['J&F']:.3f} J={r['J']:.3f} F={r['F']:.3f} "
            f"({r['videos']} videos, {r['objects']} objects, {r['seconds']:.0f}s)",
            flush=True,
        )
    unseen = [results[f]["J&F"] for f in families if FAMILIES[f].held_out]
    if unseen:
        print(f"mean over held-out families: {sum(unseen) / len(unseen):.3f}")
    if args.json:
        write_json(
            args.json,
            {
                "environment": environment(),
                "config": args.config,
                "checkpoint": args.checkpoint,
                "seeds": [seeds.start, seeds.stop - 1],
                "families": results,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
