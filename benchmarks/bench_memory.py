"""Peak memory against video length: is a bounded tracking pass's memory flat?

Each video length runs in a fresh subprocess, because the resident-set
high-water mark (VmHWM in /proc/self/status) only ever grows within a
process. The child builds the model, tracks ``--objects`` clicked objects
through a synthetic video whose frames are rendered on demand from their
index (:class:`benchmarks.common.MovingDiscs`: the source holds no video),
with ``track_session(bounded=True)`` as the pipeline runs it, and reports its
peak RSS, the largest number of (object, frame) states and bytes the session
held, and on CUDA ``torch.cuda.max_memory_allocated``.

    python -m benchmarks.bench_memory --lengths 100,300,1000,3000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from benchmarks.common import (
    MINI_A_CHECKPOINT,
    REPO,
    MovingDiscs,
    add_common_arguments,
    add_model_arguments,
    click_prompts,
    describe_model,
    environment,
    frame_size,
    int_list,
    load_model,
    positive_int,
    print_table,
    read_peak_rss,
    report,
    run_cli,
    tracker_options,
)

RESULT_PREFIX = "BENCH_MEMORY_RESULT "
TARGET_RATIO = 1.15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_memory", description=__doc__.split("\n\n")[0]
    )
    add_model_arguments(p, checkpoint_default="mini")
    p.add_argument(
        "--lengths", type=int_list, default=[100, 300, 1000, 3000], help="video lengths in frames"
    )
    p.add_argument(
        "--reference-length",
        type=positive_int,
        default=300,
        help="the length the longest is compared with (default 300; the shortest if not run)",
    )
    p.add_argument("--objects", type=positive_int, default=3, help="objects tracked (default 3)")
    p.add_argument(
        "--size", type=frame_size, default=(480, 640), help="video frame size HxW (default 480x640)"
    )
    p.add_argument(
        "--storage-device",
        default=None,
        help="where per-frame memories live (e.g. cpu to offload from a GPU)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="frames read ahead on a thread (TrackerOptions.prefetch_frames; default: the tracker's)",
    )
    p.add_argument(
        "--unbounded",
        action="store_true",
        help="keep every frame's state (bounded=False), to show the growth it avoids",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds each length's subprocess may run"
    )
    p.add_argument("--child-length", type=positive_int, default=None, help=argparse.SUPPRESS)
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.checkpoint == "mini":
        args.checkpoint = MINI_A_CHECKPOINT
    elif args.checkpoint in ("none", ""):
        args.checkpoint = None
    return args


def child(args: argparse.Namespace) -> dict:
    """Track one video of ``args.child_length`` frames in this process; memory figures."""
    from sam2_core.tracker import VideoSession, track_session

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model, args.checkpoint, args.device, args.image_size)
    length = args.child_length
    height, width = args.size
    source = MovingDiscs(length, height, width, num_discs=args.objects)
    prompts = click_prompts(source, args.objects)
    options = tracker_options(
        args.dtype,
        batch_objects=True,
        storage_device=args.storage_device,
        prefetch_frames=args.prefetch,
    )
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = read_peak_rss()
    session = VideoSession(model, source, options)
    max_frames = max_bytes = 0
    samples = []
    every = max(1, length // 10)
    started = time.perf_counter()
    for i, _ in enumerate(track_session(session, prompts, bounded=not args.unbounded)):
        max_frames = max(max_frames, session.stored_frames())
        max_bytes = max(max_bytes, session.stored_bytes())
        if i % every == 0 or i == length - 1:
            samples.append({"frame": i, "rss_bytes": read_peak_rss().get("rss_bytes")})
    elapsed = time.perf_counter() - started
    after = read_peak_rss()
    out = {
        "length": length,
        "model": describe_model(args.model, model, args.checkpoint),
        "rss_after_build_bytes": before.get("rss_bytes"),
        "peak_rss_bytes": after.get("peak_rss_bytes"),
        "final_rss_bytes": after.get("rss_bytes"),
        "max_stored_frames": max_frames,
        "max_stored_bytes": max_bytes,
        "final_stored_frames": session.stored_frames(),
        "rss_samples": samples,
        "track_s": elapsed,
        "frames_per_s": length / elapsed if elapsed > 0 else None,
    }
    if cuda:
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return out


def _child_argv(args: argparse.Namespace, length: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.bench_memory",
        "--child-length",
        str(length),
        "--model",
        args.model,
        "--checkpoint",
        args.checkpoint or "none",
        "--objects",
        str(args.objects),
        "--size",
        f"{args.size[0]}x{args.size[1]}",
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]
    if args.image_size:
        argv += ["--image-size", str(args.image_size)]
    if args.storage_device:
        argv += ["--storage-device", args.storage_device]
    if args.unbounded:
        argv.append("--unbounded")
    if args.prefetch is not None:
        argv += ["--prefetch", str(args.prefetch)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def run_length(args: argparse.Namespace, length: int) -> dict:
    """One length in a fresh subprocess; its JSON result line."""
    proc = subprocess.run(
        _child_argv(args, length), cwd=REPO, capture_output=True, text=True, timeout=args.timeout
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench_memory child for length {length} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run(args: argparse.Namespace) -> dict:
    env = environment()  # before the work: the load average then is what the run met
    lengths = sorted(set(args.lengths))
    results = [run_length(args, n) for n in lengths]
    model_info = results[0]["model"]
    for r in results:
        r.pop("model", None)
    longest = results[-1]
    ref_len = args.reference_length if args.reference_length in lengths else lengths[0]
    ref = next(r for r in results if r["length"] == ref_len)
    figures = {"results": results}
    if longest is not ref:
        ratio = longest["peak_rss_bytes"] / ref["peak_rss_bytes"]
        growth_ref = ref["peak_rss_bytes"] - ref["rss_after_build_bytes"]
        growth_long = longest["peak_rss_bytes"] - longest["rss_after_build_bytes"]
        figures["comparison"] = {
            "lengths": [longest["length"], ref_len],
            "peak_rss_ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "within_target": ratio <= TARGET_RATIO,
            "tracking_growth_bytes": [growth_long, growth_ref],
            "max_stored_bytes_ratio": longest["max_stored_bytes"] / max(ref["max_stored_bytes"], 1),
        }
        if "cuda_max_allocated_bytes" in longest:
            figures["comparison"]["cuda_max_allocated_ratio"] = (
                longest["cuda_max_allocated_bytes"] / ref["cuda_max_allocated_bytes"]
            )
    settings = {
        **model_info,
        "lengths": lengths,
        "reference_length": ref_len,
        "objects": args.objects,
        "video_size": list(args.size),
        "device": args.device,
        "dtype": args.dtype,
        "storage_device": args.storage_device,
        "bounded": not args.unbounded,
        "prefetch_frames": tracker_options(
            args.dtype, True, prefetch_frames=args.prefetch
        ).prefetch_frames,
        "threads": args.threads,
        "prompts": "one positive click per object on frame 0",
        "frames_source": "MovingDiscs rendered on demand (no video held)",
        "isolation": "one fresh subprocess per length (VmHWM is a process-lifetime maximum)",
    }
    return report("bench_memory", settings, figures, env)


def print_report(doc: dict) -> None:
    s = doc["settings"]
    mib = 1 / 2**20
    rows = []
    for r in doc["figures"]["results"]:
        row = [
            r["length"],
            r["rss_after_build_bytes"] * mib,
            r["peak_rss_bytes"] * mib,
            (r["peak_rss_bytes"] - r["rss_after_build_bytes"]) * mib,
            r["max_stored_frames"],
            r["max_stored_bytes"] * mib,
            r["frames_per_s"],
        ]
        if "cuda_max_allocated_bytes" in r:
            row.append(r["cuda_max_allocated_bytes"] * mib)
        rows.append(row)
    headers = [
        "frames",
        "RSS built MiB",
        "peak RSS MiB",
        "growth MiB",
        "states",
        "state MiB",
        "frames/s",
    ]
    if rows and len(rows[0]) > len(headers):
        headers.append("CUDA max MiB")
    title = (
        f"memory: {s['model']} at {s['image_size']}, {s['objects']} objects, {s['dtype']}, {s['device']}, "
        f"video {s['video_size'][0]}x{s['video_size'][1]}, bounded={s['bounded']}"
    )
    print_table(headers, rows, title)
    c = doc["figures"].get("comparison")
    if c:
        verdict = "within" if c["within_target"] else "OUTSIDE"
        print(
            f"peak RSS {c['lengths'][0]} vs {c['lengths'][1]} frames: x{c['peak_rss_ratio']:.3f} "
            f"({verdict} the x{c['target_ratio']:.2f} target)"
        )


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child_length is not None:
        print(RESULT_PREFIX + json.dumps(child(args)), flush=True)
        return None
    return run_cli(args, run, print_report)


if __name__ == "__main__":
    main()
