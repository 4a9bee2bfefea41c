"""What every benchmark shares: the machine and versions it ran on, JSON output,
tables, latency statistics, and synthetic frame sources.

A figure without its device, versions and command is not worth keeping, so
:func:`environment` is written into every JSON file next to the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jobs.argtypes import positive_int  # noqa: F401  (re-exported for the benchmarks)

REPO = Path(__file__).resolve().parents[1]
MINI_A_DIR = REPO.parent / "shared" / "sam2_reference" / "mini_a"
MINI_A_CONFIG = str(MINI_A_DIR / "config.json")
MINI_A_CHECKPOINT = str(MINI_A_DIR / "checkpoint.pt")

DTYPES = ("float32", "bfloat16")


# ---------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # a missing optional package is reported as None, not an error
        return None
    return getattr(mod, "__version__", None)


def _command_line() -> str:
    """How this process was started, with a benchmark script shown as ``python -m benchmarks.x``."""
    argv = list(sys.argv)
    script = Path(argv[0]) if argv else Path("")
    if script.parent.name == "benchmarks" and script.suffix == ".py":
        argv = ["-m", f"benchmarks.{script.stem}", *argv[1:]]
    return " ".join(["python", *argv])


def environment() -> dict:
    """The device and software a figure was measured on (JSON-ready)."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    device = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        # 1/5/15-minute load average (benchmarks take it as they start): a busy machine shows here.
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    if torch.cuda.is_available():
        device["gpu"] = torch.cuda.get_device_name(0)
        device["gpu_count"] = torch.cuda.device_count()
        device["cuda_version"] = torch.version.cuda
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "ray": _version("ray"),
        "av": _version("av"),
        "pyarrow": _version("pyarrow"),
        "git": _git_commit(),
    }
    return {
        "device": device,
        "versions": versions,
        "command": _command_line(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(benchmark: str, settings: dict, figures: dict, env: dict | None = None) -> dict:
    """The JSON document of one benchmark run."""
    return {
        "benchmark": benchmark,
        **(env or environment()),
        "settings": settings,
        "figures": figures,
    }


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------- arguments and output


def int_list(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16] (argparse type; every entry must be >= 1)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def frame_size(text: str) -> tuple[int, int]:
    """'480x640' -> (480, 640) as height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 480x640, got {text!r}"
        ) from err
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"frame size must be at least 16x16, got {text!r}")
    return h, w


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--json and --threads, which every benchmark takes."""
    parser.add_argument(
        "--json", default=None, help="write settings, figures, device and versions here"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)"
    )


def add_model_arguments(
    parser: argparse.ArgumentParser, checkpoint_default: str | None, runtime: bool = True
) -> None:
    """--model and --checkpoint, which every model-running benchmark takes; with ``runtime``
    also --image-size, --device and --dtype."""
    parser.add_argument(
        "--model",
        default=MINI_A_CONFIG,
        help="official name or config path (default: the mini_a config)",
    )
    if checkpoint_default == "mini":
        checkpoint_help = (
            "checkpoint; 'mini' (default) = the mini_a checkpoint, 'none' = random weights"
        )
    else:
        checkpoint_help = "checkpoint (default: random weights, speed does not depend on them; 'mini' = the mini_a checkpoint)"
    parser.add_argument("--checkpoint", default=checkpoint_default, help=checkpoint_help)
    if runtime:
        parser.add_argument(
            "--image-size",
            type=int,
            default=None,
            help="model input size override (multiple of 16)",
        )
        parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
        parser.add_argument(
            "--dtype",
            choices=DTYPES,
            default="float32",
            help="float32, or bfloat16 autocast (tracking benchmarks also store memory in bfloat16)",
        )


def run_cli(args: argparse.Namespace, run, print_report) -> dict:
    """The body of a benchmark's main(): measure, print the table, write the JSON if asked."""
    doc = run(args)
    print_report(doc)
    if args.json:
        write_json(args.json, doc)
    return doc


def print_table(headers: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    if title:
        print(title)
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def latency_stats(seconds: Sequence[float]) -> dict:
    """Median, p90, mean, min, max (ms) and the rate (per s) of a list of durations."""
    x = np.asarray(seconds, dtype=np.float64)
    if x.size == 0:
        raise ValueError("latency_stats needs at least one duration")
    return {
        "count": int(x.size),
        "median_ms": float(np.median(x) * 1e3),
        "p90_ms": float(np.percentile(x, 90) * 1e3),
        "mean_ms": float(x.mean() * 1e3),
        "min_ms": float(x.min() * 1e3),
        "max_ms": float(x.max() * 1e3),
        "per_s": float(x.size / x.sum()) if x.sum() > 0 else float("inf"),
    }


# ---------------------------------------------------------------------- model and options


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return torch.float32 if name == "float32" else torch.bfloat16


def load_model(model: str, checkpoint: str | None, device: str, image_size: int | None = None):
    """Build ``model`` (official name or config path), with ``checkpoint`` or random weights,
    optionally at another input ``image_size`` (a multiple of 16; RoPE adapts to the grid)."""
    from dataclasses import replace

    from sam2_core.build import build_model, resolve_config

    cfg = resolve_config(model)
    if image_size is not None:
        if image_size < 64 or image_size % 16:
            raise ValueError(
                f"--image-size must be a multiple of 16 and at least 64, got {image_size}"
            )
        cfg = replace(cfg, image_size=int(image_size))
    return build_model(cfg, checkpoint=checkpoint, device=device)


def describe_model(model_name: str, net, checkpoint: str | None) -> dict:
    return {
        "model": model_name,
        "checkpoint": checkpoint,
        "weights": "checkpoint" if checkpoint else "random",
        "image_size": int(net.image_size),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }


def tracker_options(
    dtype: str,
    batch_objects: bool,
    storage_device: str | None = None,
    prefetch_frames: int | None = None,
):
    """TrackerOptions for a benchmark: ``dtype`` 'bfloat16' means autocast and bfloat16 stored
    memory; ``prefetch_frames`` None keeps the tracker's default."""
    from sam2_core.tracker import TrackerOptions

    kwargs: dict = {"batch_objects": batch_objects, "storage_device": storage_device}
    if dtype != "float32":
        kwargs["memory_dtype"] = kwargs["autocast_dtype"] = torch_dtype(dtype)
    if prefetch_frames is not None:
        kwargs["prefetch_frames"] = int(prefetch_frames)
    return TrackerOptions(**kwargs)


# ---------------------------------------------------------------------- synthetic frames


class MovingDiscs:
    """A video synthesised frame by frame: a textured background drifting one pixel per frame
    and ``num_discs`` coloured discs on slow circular paths. Frame ``i`` is computed on demand
    from ``i`` alone, so the source holds no video, only the background (H x W x 3 uint8).

    ``centres(0)`` gives where to click each disc on frame 0.
    """

    def __init__(
        self,
        num_frames: int,
        height: int = 480,
        width: int = 640,
        num_discs: int = 4,
        seed: int = 0,
    ):
        if num_frames < 1 or num_discs < 1:
            raise ValueError(
                f"MovingDiscs needs num_frames >= 1 and num_discs >= 1, got {num_frames}, {num_discs}"
            )
        rng = np.random.default_rng(seed)
        self._n, self._h, self._w = int(num_frames), int(height), int(width)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        bg = np.stack(
            [
                128 + 60 * np.sin(xx / 23.0 + rng.uniform(0, 6)) * np.cos(yy / 31.0),
                128 + 60 * np.sin(yy / 17.0 + rng.uniform(0, 6)),
                128 + 40 * np.cos((xx + yy) / 41.0),
            ],
            axis=-1,
        )
        self._background = np.clip(bg, 0, 255).astype(np.uint8)
        cols = int(math.ceil(math.sqrt(num_discs)))
        rows = int(math.ceil(num_discs / cols))
        k = np.arange(num_discs)
        self._anchor = np.stack(
            [(k % cols + 0.5) / cols * width, (k // cols + 0.5) / rows * height], axis=1
        )
        self._radius = 0.35 * min(width / cols, height / rows)
        self._orbit = 0.25 * self._radius
        self._phase = rng.uniform(0, 2 * math.pi, size=num_discs)
        self._colors = rng.integers(0, 256, size=(num_discs, 3), dtype=np.uint8)

    @property
    def height(self) -> int:
        return self._h

    @property
    def width(self) -> int:
        return self._w

    def __len__(self) -> int:
        return self._n

    def centres(self, index: int) -> np.ndarray:
        """D x 2 (x, y) disc centres on frame ``index``."""
        angle = self._phase + 0.05 * index
        return self._anchor + self._orbit * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._n:
            raise IndexError(f"frame index {index} out of range for a video of {self._n} frames")
        frame = np.roll(self._background, index % self._w, axis=1)
        r = self._radius
        for (cx, cy), color in zip(self.centres(index), self._colors):
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, self._w)
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, self._h)
            yy = np.arange(y0, y1)[:, None] + 0.5
            xx = np.arange(x0, x1)[None, :] + 0.5
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            frame[y0:y1, x0:x1][inside] = color
        return frame


def click_prompts(source: MovingDiscs, num_objects: int) -> list:
    """One positive click per object on frame 0, at the first ``num_objects`` disc centres."""
    from sam2_core.tracker import ObjectPrompt

    centres = source.centres(0)
    if num_objects > len(centres):
        raise ValueError(f"{num_objects} objects but the video has only {len(centres)} discs")
    return [
        ObjectPrompt(
            object_id=i + 1,
            frame=0,
            points=centres[i : i + 1].astype(np.float32),
            labels=np.ones(1, dtype=np.int32),
        )
        for i in range(num_objects)
    ]


def read_peak_rss() -> dict:
    """This process's resident set now and its high-water mark (bytes), from /proc/self/status."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return {"rss_bytes": out.get("VmRSS"), "peak_rss_bytes": out.get("VmHWM")}
