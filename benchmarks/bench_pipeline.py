"""End-to-end labeling throughput: ``python -m jobs label`` on a manifest of short videos
with 1, 2 and 4 CPU workers, and where a worker's time goes.

The dataset is written first with PyAV (H.264 MP4s of synthetic videos,
``pipeline.synthetic_io``; one click per object). Each worker count then runs
the real command in a fresh process on a local Ray of ``workers x
cpus-per-worker`` CPUs, each worker with ``--torch-threads`` threads, into its
own output folder; frames/s come from the run's ``summary.json`` (its wall
time covers Ray start, worker start and model load, labeling and commits) and
from the command's own wall time.

A single-process pass (``pipeline.labeling.label_frames``, as a worker runs it,
on the same videos and thread count, but without the tracker's read-ahead
thread so the parts add up) splits a worker's time into decoding (frames are
decoded on demand inside tracking), mask RLE encoding and the rest (model,
tracker bookkeeping, table building).

    RAY_AUTH_MODE=disabled python -m benchmarks.bench_pipeline --videos 6 --frames 60 --workers 1,2,4 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    MINI_A_CHECKPOINT,
    REPO,
    add_common_arguments,
    add_model_arguments,
    environment,
    frame_size,
    int_list,
    positive_int,
    print_table,
    report,
    run_cli,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_pipeline", description=__doc__.split("\n\n")[0]
    )
    add_model_arguments(p, checkpoint_default="mini", runtime=False)
    p.add_argument(
        "--videos", type=positive_int, default=6, help="videos in the manifest (default 6)"
    )
    p.add_argument("--frames", type=positive_int, default=60, help="frames per video (default 60)")
    p.add_argument(
        "--objects", type=positive_int, default=2, help="objects (clicks) per video (default 2)"
    )
    p.add_argument(
        "--size", type=frame_size, default=(256, 256), help="video frame size HxW (default 256x256)"
    )
    p.add_argument(
        "--workers", type=int_list, default=[1, 2, 4], help="worker counts (default 1,2,4)"
    )
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="Ray CPUs per worker (default 1)"
    )
    p.add_argument(
        "--torch-threads", type=positive_int, default=1, help="torch threads per worker (default 1)"
    )
    p.add_argument(
        "--no-breakdown", action="store_true", help="skip the single-process time breakdown"
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="keep the dataset and outputs here (default: a temporary folder, removed)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds each label run may take")
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.checkpoint == "mini":
        args.checkpoint = MINI_A_CHECKPOINT
    elif args.checkpoint in ("none", ""):
        args.checkpoint = None
    if args.cpus_per_worker <= 0:
        p.error(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker}")
    return args


def write_dataset(root: Path, args: argparse.Namespace):
    """The synthetic videos (MP4 via PyAV), their ground truth and a one-click-per-object manifest."""
    from pipeline.synthetic_io import write_synthetic_dataset
    from sam2_core.synthetic import SyntheticConfig

    h, w = args.size
    cfg = SyntheticConfig(
        height=h,
        width=w,
        num_frames=args.frames,
        min_objects=args.objects,
        max_objects=args.objects,
    )
    return write_synthetic_dataset(str(root / "data"), range(args.videos), cfg)


def label_command(args: argparse.Namespace, manifest: str, output: str, workers: int) -> list[str]:
    num_cpus = max(1, int(round(workers * args.cpus_per_worker)))
    argv = [
        sys.executable,
        "-m",
        "jobs",
        "label",
        "--manifest",
        manifest,
        "--output",
        output,
        "--model",
        args.model,
        "--workers",
        str(workers),
        "--cpus-per-worker",
        str(args.cpus_per_worker),
        "--torch-threads",
        str(args.torch_threads),
        "--num-cpus",
        str(num_cpus),
        "--run-id",
        f"bench-w{workers}",
        "--no-progress",
    ]
    if args.checkpoint:
        argv += ["--checkpoint", args.checkpoint]
    return argv


def run_label(args: argparse.Namespace, manifest: str, output: Path, workers: int) -> dict:
    """One ``jobs label`` run; its summary.json figures and the command's wall time."""
    argv = label_command(args, manifest, str(output), workers)
    # A private Ray temp folder: otherwise ray.init() joins any cluster `ray start`ed on this
    # machine (its address file lives in /tmp/ray) instead of starting the local one measured here.
    ray_tmp = tempfile.mkdtemp(prefix="bray_")
    env = dict(
        os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), RAY_TMPDIR=ray_tmp
    )
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    summary_path = output / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        raise RuntimeError(
            f"jobs label with {workers} worker(s) failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    summary = json.loads(summary_path.read_text())
    out = {
        "workers": workers,
        "status": summary.get("status"),
        "units_done": summary.get("units_done"),
        "failed": summary.get("failed"),
        "frames": summary.get("frames"),
        "rows": summary.get("rows"),
        "summary_wall_time_s": summary.get("wall_time_s"),
        "summary_frames_per_s": summary.get("frames_per_s"),
        "command_wall_s": wall,
        "command_frames_per_s": summary.get("frames", 0) / wall if wall > 0 else None,
    }
    # Any further timings the coordinator records (per-unit or per-worker) are kept as they are.
    out["summary_timings"] = {
        k: v
        for k, v in summary.items()
        if k.endswith("_s") and k not in ("wall_time_s", "frames_per_s")
    }
    for key in ("timings", "workers_info", "unit_timings"):
        if key in summary:
            out["summary_timings"][key] = summary[key]
    return out


class _TimedFrames:
    """A FrameSource that adds up the time spent fetching (decoding) frames."""

    def __init__(self, frames):
        self._frames = frames
        self.seconds = 0.0

    @property
    def height(self) -> int:
        return self._frames.height

    @property
    def width(self) -> int:
        return self._frames.width

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int):
        start = time.perf_counter()
        try:
            return self._frames[index]
        finally:
            self.seconds += time.perf_counter() - start


@contextlib.contextmanager
def _timed_mask_encoding(totals: dict):
    """Time the RLE encoding calls of mask rows (pipeline.masks; restored on exit). They run on
    the labeling's encoder threads, so the total may overlap tracking."""
    import pipeline.masks as masks

    original = masks.encode_mask

    def timed(mask):
        start = time.perf_counter()
        try:
            return original(mask)
        finally:
            totals["encode_s"] += time.perf_counter() - start

    masks.encode_mask = timed
    try:
        yield
    finally:
        masks.encode_mask = original


def breakdown(args: argparse.Namespace, manifest: str) -> dict:
    """Where one worker's time goes, labeling every video in this process as a worker does."""
    import torch

    from pipeline.labeling import label_frames
    from pipeline.manifest import read_manifest
    from pipeline.video import open_video
    from sam2_core.build import build_model
    from sam2_core.tracker import TrackerOptions

    torch.set_num_threads(args.torch_threads)
    # No read-ahead thread, so decoding is not hidden behind the model and the parts add up
    # (workers prefetch frames, which can hide part of the decode time).
    sequential = TrackerOptions(prefetch_frames=0)
    started = time.perf_counter()
    model = build_model(args.model, checkpoint=args.checkpoint, device="cpu")
    load_s = time.perf_counter() - started
    jobs, rejects = read_manifest(manifest)
    if rejects:
        raise RuntimeError(f"the benchmark manifest has rejects: {rejects[:3]}")
    totals = {"decode_s": 0.0, "encode_s": 0.0, "label_s": 0.0, "frames": 0}
    with _timed_mask_encoding(totals):
        for job in jobs:
            with open_video(job.video) as reader:
                frames = _TimedFrames(reader)
                start = time.perf_counter()
                _, stats = label_frames(
                    model,
                    frames,
                    job.objects,
                    video_id=job.video_id,
                    run_id="bench",
                    model_name="bench",
                    tracker_options=sequential,
                )
                totals["label_s"] += time.perf_counter() - start
                totals["decode_s"] += frames.seconds
                totals["frames"] += stats.frames
    other = totals["label_s"] - totals["decode_s"] - totals["encode_s"]
    label_s = totals["label_s"]
    return {
        "torch_threads": args.torch_threads,
        "prefetch_frames": 0,
        "model_load_s": load_s,
        "frames": totals["frames"],
        "label_s": label_s,
        "frames_per_s": totals["frames"] / label_s if label_s > 0 else None,
        "decode_s": totals["decode_s"],
        "mask_encode_s": totals["encode_s"],
        "model_and_rest_s": other,
        "share": {
            "decode": totals["decode_s"] / label_s,
            "mask_encode": totals["encode_s"] / label_s,
            "model_and_rest": other / label_s,
        },
    }


def run(args: argparse.Namespace) -> dict:
    env = environment()  # before the work: the load average then is what the run met
    if args.work_dir:
        root = Path(args.work_dir)
        root.mkdir(parents=True, exist_ok=True)
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="bench_pipeline_")
        root = Path(cleanup.name)
    try:
        started = time.perf_counter()
        dataset = write_dataset(root, args)
        write_s = time.perf_counter() - started
        runs = []
        for n in args.workers:
            out = root / f"out_w{n}"
            if out.exists():
                shutil.rmtree(out)  # a fresh output: nothing already committed to skip
            runs.append(run_label(args, dataset.manifest, out, n))
        base = runs[0]["summary_frames_per_s"] if runs else None
        for r in runs:
            r["scaling_vs_first"] = r["summary_frames_per_s"] / base if base else None
        figures = {"runs": runs}
        if not args.no_breakdown:
            single = breakdown(args, dataset.manifest)
            figures["single_process"] = single
            for r in runs:
                # Perfect scaling of one worker's labeling time, and what the run spent beyond it
                # (Ray and worker start, model loads, commits, scheduling, CPU contention).
                r["ideal_wall_s"] = single["label_s"] / r["workers"]
                r["overhead_s"] = r["summary_wall_time_s"] - r["ideal_wall_s"]
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    h, w = args.size
    settings = {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "videos": args.videos,
        "frames_per_video": args.frames,
        "objects_per_video": args.objects,
        "video_size": [h, w],
        "video_codec": "H.264 (libx264, yuv420p, crf 14) MP4 written with PyAV",
        "prompts": "one positive click per object (pipeline.synthetic_io manifest)",
        "workers": args.workers,
        "cpus_per_worker": args.cpus_per_worker,
        "torch_threads_per_worker": args.torch_threads,
        "ray": "local, started by each run (--num-cpus workers x cpus-per-worker)",
        "dataset_write_s": write_s,
        "work_dir": args.work_dir,
    }
    return report("bench_pipeline", settings, figures, env)


def print_report(doc: dict) -> None:
    s = doc["settings"]
    rows = [
        [
            r["workers"],
            r["frames"],
            r["summary_wall_time_s"],
            r["summary_frames_per_s"],
            r["command_wall_s"],
            r["command_frames_per_s"],
            r["scaling_vs_first"],
        ]
        for r in doc["figures"]["runs"]
    ]
    title = (
        f"jobs label: {s['videos']} videos x {s['frames_per_video']} frames {s['video_size'][0]}x{s['video_size'][1]}, "
        f"{s['objects_per_video']} objects each, {s['torch_threads_per_worker']} torch thread(s) per worker"
    )
    print_table(
        ["workers", "frames", "run s", "frames/s", "command s", "cmd frames/s", "scaling"],
        rows,
        title,
    )
    b = doc["figures"].get("single_process")
    if b:
        sh = b["share"]
        print(
            f"single process ({b['torch_threads']} thread(s)): {b['frames_per_s']:.2f} frames/s; "
            f"decode {sh['decode']:.1%}, mask RLE {sh['mask_encode']:.1%}, model and rest {sh['model_and_rest']:.1%}; "
            f"model load {b['model_load_s']:.2f} s"
        )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
