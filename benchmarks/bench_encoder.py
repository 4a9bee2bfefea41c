"""Image encoder throughput: images/s by batch size (eval mode, inference mode).

The image encoder runs once per video frame whatever the number of objects,
so its images/s bounds a tracker's frames/s from above.

    python -m benchmarks.bench_encoder --model sam2.1_hiera_tiny --batch-sizes 1,2,4,8 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from benchmarks.common import (
    add_common_arguments,
    add_model_arguments,
    describe_model,
    environment,
    int_list,
    latency_stats,
    load_model,
    positive_int,
    print_table,
    report,
    run_cli,
    torch_dtype,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_encoder", description=__doc__.split("\n\n")[0]
    )
    add_model_arguments(p, checkpoint_default=None)
    p.add_argument(
        "--batch-sizes", type=int_list, default=[1, 2, 4, 8], help="batch sizes (default 1,2,4,8)"
    )
    p.add_argument(
        "--repeats", type=positive_int, default=5, help="timed batches per size (default 5)"
    )
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed batches per size first (default 1)"
    )
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict:
    env = environment()  # before the work: the load average then is what the run met
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model, args.checkpoint, args.device, args.image_size)
    size = model.image_size
    autocast = (
        torch.autocast(torch.device(args.device).type, dtype=torch_dtype(args.dtype))
        if args.dtype != "float32"
        else contextlib.nullcontext()
    )
    results = []
    with torch.inference_mode(), autocast:
        for b in args.batch_sizes:
            images = torch.randn(b, 3, size, size, device=args.device)
            for _ in range(args.warmup):
                model.encode_image(images)
            _sync(args.device)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.encode_image(images)
                _sync(args.device)
                times.append(time.perf_counter() - start)
            stats = latency_stats(times)
            results.append(
                {
                    "batch_size": b,
                    "images_per_s": b * stats["per_s"],
                    "batch_median_ms": stats["median_ms"],
                    "batch_p90_ms": stats["p90_ms"],
                    "per_image_ms": stats["median_ms"] / b,
                    "batches": stats["count"],
                }
            )
            del images
    settings = {
        **describe_model(args.model, model, args.checkpoint),
        "batch_sizes": args.batch_sizes,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": args.device,
        "dtype": args.dtype,
        "timed": "SAM2Model.encode_image (trunk, FPN neck, decoder skip projections) on random images",
    }
    return report("bench_encoder", settings, {"results": results}, env)


def print_report(doc: dict) -> None:
    s = doc["settings"]
    rows = [
        [
            r["batch_size"],
            r["images_per_s"],
            r["per_image_ms"],
            r["batch_median_ms"],
            r["batch_p90_ms"],
        ]
        for r in doc["figures"]["results"]
    ]
    title = f"image encoder: {s['model']} at {s['image_size']}, {s['dtype']}, {s['device']}, {s['repeats']} batches per size"
    print_table(["batch", "images/s", "ms/image", "median ms", "p90 ms"], rows, title)


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
