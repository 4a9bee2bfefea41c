"""Tracker throughput: frames/s and per-frame latency, batched objects against one at a time.

For each object count the same video is tracked with ``batch_objects=True``
(every object of a frame through memory attention, decoder and memory encoder
as one batch) and ``batch_objects=False`` (the same code, one object at a
time). The two modes alternate within every repetition, in swapped order on
odd repetitions, so slow drifts of a shared machine hit both alike.

Only propagation is timed: the model is built and the prompts added first,
frame 0 (the prompted frame) and ``--warmup`` tracked frames are not counted.

    python -m benchmarks.bench_tracker --objects 1,4,16 --frames 40 --json out.json
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import (
    MINI_A_CHECKPOINT,
    MovingDiscs,
    add_common_arguments,
    add_model_arguments,
    click_prompts,
    describe_model,
    environment,
    frame_size,
    int_list,
    latency_stats,
    load_model,
    positive_int,
    print_table,
    report,
    run_cli,
    tracker_options,
)

MODES = {"batched": True, "object_by_object": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_tracker", description=__doc__.split("\n\n")[0]
    )
    add_model_arguments(p, checkpoint_default=None)
    p.add_argument(
        "--objects", type=int_list, default=[1, 4, 16], help="object counts, e.g. 1,4,16"
    )
    p.add_argument(
        "--frames",
        type=positive_int,
        default=40,
        help="frames per video, prompted frame included (default 40)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="tracked frames not counted at the start of each pass (default 2)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="passes per mode and object count (default 3)",
    )
    p.add_argument(
        "--size", type=frame_size, default=(480, 640), help="video frame size HxW (default 480x640)"
    )
    p.add_argument(
        "--modes", default="batched,object_by_object", help="which modes to run (default both)"
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="frames read ahead on a thread (TrackerOptions.prefetch_frames; default: the tracker's)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's hot parts first (compilation lands in the warm-up frames; raise --warmup)",
    )
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.prefetch is not None and args.prefetch < 0:
        p.error(f"--prefetch must be >= 0, got {args.prefetch}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.frames < args.warmup + 2:
        p.error(
            f"--frames ({args.frames}) must leave at least one timed frame after frame 0 and {args.warmup} warm-up frames"
        )
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        p.error(f"--modes takes {', '.join(MODES)}; got {unknown or args.modes}")
    if args.checkpoint == "mini":
        args.checkpoint = MINI_A_CHECKPOINT
    return args


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pass(model, frames, prompts, options, warmup: int, device: str) -> list[float]:
    """Track the whole video once; the seconds each counted frame took."""
    from sam2_core.tracker import VideoSession, track_session

    session = VideoSession(model, frames, options)
    stream = track_session(session, prompts, bounded=True)
    next(stream)  # adds the prompts and returns the prompted frame 0: not timed
    times: list[float] = []
    _sync(device)
    start = time.perf_counter()
    for i, _ in enumerate(stream):
        _sync(device)
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - start)
        start = now
    return times


def run(args: argparse.Namespace) -> dict:
    env = environment()  # before the work: the load average then is what the run met
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model, args.checkpoint, args.device, args.image_size)
    if args.compile:
        model.compile_hot_parts()
    height, width = args.size
    frames_src = MovingDiscs(args.frames, height, width, num_discs=max(args.objects))
    # In memory, so frame synthesis is not timed (the tracker reads each frame once).
    from sam2_core.frames import ArrayFrames

    frames = ArrayFrames([frames_src[i] for i in range(len(frames_src))])
    times: dict[tuple[int, str], list[float]] = {}
    pass_rates: dict[tuple[int, str], list[float]] = {}
    for rep in range(args.repeats):
        for n in args.objects:
            prompts = click_prompts(frames_src, n)
            order = args.modes if rep % 2 == 0 else args.modes[::-1]
            for mode in order:
                options = tracker_options(args.dtype, MODES[mode], prefetch_frames=args.prefetch)
                t = time_pass(model, frames, prompts, options, args.warmup, args.device)
                times.setdefault((n, mode), []).extend(t)
                pass_rates.setdefault((n, mode), []).append(len(t) / sum(t))

    results = []
    for n in args.objects:
        entry = {"objects": n}
        for mode in args.modes:
            stats = latency_stats(times[(n, mode)])
            stats["frames_per_s"] = stats.pop("per_s")
            stats["pass_frames_per_s"] = pass_rates[(n, mode)]
            entry[mode] = stats
        if all(m in entry for m in MODES):
            entry["speedup"] = (
                entry["batched"]["frames_per_s"] / entry["object_by_object"]["frames_per_s"]
            )
            entry["median_latency_ratio"] = (
                entry["object_by_object"]["median_ms"] / entry["batched"]["median_ms"]
            )
        results.append(entry)

    settings = {
        **describe_model(args.model, model, args.checkpoint),
        "objects": args.objects,
        "frames": args.frames,
        "timed_frames_per_pass": args.frames - 1 - args.warmup,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "video_size": [height, width],
        "device": args.device,
        "dtype": args.dtype,
        "modes": args.modes,
        "prefetch_frames": tracker_options(
            args.dtype, True, prefetch_frames=args.prefetch
        ).prefetch_frames,
        "compiled": args.compile,
        "prompts": "one positive click per object on frame 0",
        "frames_source": "MovingDiscs, pre-rendered in memory (ArrayFrames)",
        "timed": "track_session(bounded=True) propagation only; frame 0 and warm-up frames excluded",
    }
    return report("bench_tracker", settings, {"results": results}, env)


def print_report(doc: dict) -> None:
    s = doc["settings"]
    rows = []
    for e in doc["figures"]["results"]:
        for mode in s["modes"]:
            st = e[mode]
            speed = e.get("speedup", float("nan")) if mode == "batched" else float("nan")
            rows.append(
                [
                    e["objects"],
                    mode,
                    st["frames_per_s"],
                    st["median_ms"],
                    st["p90_ms"],
                    st["count"],
                    speed,
                ]
            )
    title = (
        f"tracker: {s['model']} ({s['weights']} weights) at {s['image_size']}, {s['dtype']}, {s['device']}, "
        f"video {s['video_size'][0]}x{s['video_size'][1]}, {s['timed_frames_per_pass']} timed frames x {s['repeats']} passes"
    )
    print_table(
        ["objects", "mode", "frames/s", "median ms", "p90 ms", "frames", "speedup"], rows, title
    )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
