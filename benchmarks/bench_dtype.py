"""bfloat16 against float32: how far the masks move, per object and frame.

Tracks the same videos with the float32 path and with each reduced-precision option
(bfloat16 stored memories; bfloat16 memories plus bfloat16 autocast) and compares every
object's mask on every frame by IoU. Videos are the demo model's held-out synthetic ones
(seeds below 1000), clicked as the make-synthetic manifest does; the model is the bundled demo
model unless ``--model``/``--checkpoint`` name another.

    python -m benchmarks.bench_dtype --seeds 0,1,2,3 --json out.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import (
    add_common_arguments,
    describe_model,
    environment,
    print_table,
    report,
    run_cli,
)

OPTIONS = {
    "memory_bf16": {"memory_dtype": torch.bfloat16},
    "memory_bf16+autocast_bf16": {"memory_dtype": torch.bfloat16, "autocast_dtype": torch.bfloat16},
}


def seed_list(text: str) -> list[int]:
    """Comma-separated seeds, each in 0..999 (the demo model trained on seeds >= 1000)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(not 0 <= s < 1000 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds in 0..999, got {text!r}")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_dtype", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", default=None, help="official name or config path (default: the bundled demo model)")
    p.add_argument("--checkpoint", default=None, help="checkpoint for --model")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2, 3], help="synthetic video seeds, 0..999 (default 0,1,2,3)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.checkpoint and not args.model:
        p.error("--checkpoint needs --model")
    return args


def _masks(model, video, prompts, options) -> dict[tuple[int, int], np.ndarray]:
    from sam2_core.frames import ArrayFrames
    from sam2_core.tracker import track_video

    out = {}
    with torch.inference_mode():
        for r in track_video(model, ArrayFrames(video.frames), prompts, options):
            present = (r.object_score_logits > 0).cpu().numpy().reshape(-1)
            masks = (r.mask_logits > 0).cpu().numpy()
            for i, oid in enumerate(r.object_ids):
                out[(int(oid), r.frame_index)] = masks[i] & bool(present[i])
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run(args: argparse.Namespace) -> dict:
    from pipeline.synthetic_io import entry_prompts, manifest_entry
    from sam2_core import build_model
    from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_SYNTHETIC_CONFIG, build_demo_model
    from sam2_core.frames import ArrayFrames
    from sam2_core.synthetic import generate_video
    from sam2_core.tracker import TrackerOptions

    env = environment()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        model = build_model(args.model, checkpoint=args.checkpoint, device=args.device)
        model_name, checkpoint = args.model, args.checkpoint
    else:
        model, model_name = build_demo_model(args.device), "bundled demo model"
        checkpoint = str(DEMO_CHECKPOINT_PATH)
    ious: dict[str, list[float]] = {name: [] for name in OPTIONS}
    for seed in args.seeds:
        video = generate_video(seed, DEMO_SYNTHETIC_CONFIG)
        prompts = entry_prompts(manifest_entry(f"{seed}.mp4", str(seed), video), ArrayFrames(video.frames))
        reference = _masks(model, video, prompts, TrackerOptions())
        for name, kwargs in OPTIONS.items():
            other = _masks(model, video, prompts, TrackerOptions(**kwargs))
            ious[name] += [_iou(reference[k], other[k]) for k in sorted(reference)]
    figures = {
        name: {
            "object_frames": len(v),
            "mean_iou": float(np.mean(v)),
            "min_iou": float(np.min(v)),
            "below_0_99": int(sum(x < 0.99 for x in v)),
        }
        for name, v in ious.items()
    }
    settings = {
        **describe_model(model_name, model, checkpoint),
        "seeds": args.seeds,
        "synthetic": "DEMO_SYNTHETIC_CONFIG (128 x 128, 48 frames, 1-3 objects)",
        "prompts": "one click per object, as the make-synthetic manifest",
        "device": args.device,
        "reference": "TrackerOptions() (float32)",
        "iou": "per object per frame, masks = logits > 0 and object present",
    }
    return report("bench_dtype", settings, {"options": figures}, env)


def print_report(doc: dict) -> None:
    rows = [
        [name, f["object_frames"], f"{f['mean_iou']:.4f}", f"{f['min_iou']:.3f}", f["below_0_99"]]
        for name, f in doc["figures"]["options"].items()
    ]
    print_table(
        ["option", "object-frames", "mean IoU", "min IoU", "below 0.99"],
        rows,
        title="bfloat16 against float32 (mask IoU per object per frame)",
    )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
