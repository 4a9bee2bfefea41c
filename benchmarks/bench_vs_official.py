"""Our tracker against Meta's SAM2VideoPredictor, side by side on the same weights, frames and clicks.

Both sides start from the same uint8 frames in memory (MovingDiscs, pre-rendered) and the same
positive click per object on frame 0, and track forward to the last frame. Meta's predictor
(the ``sam2`` 1.1.0 package, a benchmark extra) is built from the config's ``resolved`` tree with
hydra's ``instantiate`` and given the frames through its own ``init_state``, with its frame loader
swapped for one that does what its JPEG loader does (Pillow resize to the model size, /255,
ImageNet normalisation) on the arrays instead of decoding files: no JPEG decoding on either side.

Timed per pass: the whole job (Meta: ``init_state`` + ``add_new_points_or_box`` per object +
``propagate_in_video``; ours: ``VideoSession`` + ``track_session``), and each steady-state frame
(time between consecutive frames yielded, after frame 0 and ``--warmup`` frames). Every frame's
masks are taken as ``logits > 0`` on the CPU on both sides. Passes are interleaved: within each
repetition every object count runs every variant, the order rotating from one repetition to the
next. An untimed first pass per object count checks that the masks agree (IoU per object per
frame, ours against Meta's) and warms both up.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    MINI_A_CHECKPOINT,
    MINI_A_CONFIG,
    MovingDiscs,
    add_common_arguments,
    click_prompts,
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

# Our side: default TrackerOptions, the same without the encode-ahead lane (frames encoded in
# turn on the tracking thread), and (on request only) without the frame read-ahead thread or
# with torch's frame resize instead of Pillow's (TrackerOptions.frame_resize).
VARIANTS = ("official", "ours", "ours_no_ahead", "ours_prefetch0", "ours_torch_resize")
DEFAULT_VARIANTS = VARIANTS[:3]
OURS_OPTIONS = {
    "ours": {},
    "ours_no_ahead": {"encode_ahead": False},
    "ours_prefetch0": {"prefetch_frames": 0},
    "ours_torch_resize": {"frame_resize": "torch"},
}
# The performance issue's targets: ours at least this many times Meta's speed, by object count.
TARGETS = {1: 1.25, 4: 1.8, 16: 2.0}
# Modules both implementations call by the same names; the rest of a frame's time is
# pre/post-processing, memory bookkeeping and Python.
PARTS = (
    "image_encoder",
    "memory_attention",
    "memory_encoder",
    "sam_prompt_encoder",
    "sam_mask_decoder",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_vs_official", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model",
        default=MINI_A_CONFIG,
        help="config.json with the official 'resolved' tree (default: mini_a's)",
    )
    p.add_argument(
        "--checkpoint",
        default="mini",
        help="official-format checkpoint both sides load ('mini' = the mini_a checkpoint)",
    )
    p.add_argument(
        "--objects", type=int_list, default=[1, 4, 16], help="object counts (default 1,4,16)"
    )
    p.add_argument("--frames", type=positive_int, default=24, help="frames per video (default 24)")
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="tracked frames after frame 0 not counted as steady state (default 2)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="timed passes per variant and object count (default 3)",
    )
    p.add_argument(
        "--size", type=frame_size, default=(480, 640), help="frame size HxW (default 480x640)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"which to run, from {', '.join(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)}; 'official' is required)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="one more untimed pass per variant and object count with module timers: ms per steady frame per part",
    )
    p.add_argument(
        "--present",
        action="store_true",
        help="raise the object-score head's last bias in the checkpoint both sides load, so that "
        "every object stays present (mini_a's random weights lose every object after the "
        "prompted frame, and absent objects cost less on both sides)",
    )
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.frames < args.warmup + 2:
        p.error(
            f"--frames ({args.frames}) must leave a steady frame after frame 0 and {args.warmup} warm-up frames"
        )
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or "official" not in args.variants or len(args.variants) < 2:
        p.error(
            f"--variants takes 'official' and at least one of ours from {', '.join(VARIANTS)}; got {args.variants}"
        )
    if args.checkpoint == "mini":
        args.checkpoint = MINI_A_CHECKPOINT
    return args


# Added to the object-score logit: far above any score the random heads give, so that every
# object is judged present on every frame, by both sides alike.
PRESENT_SHIFT = 30.0


def always_present_checkpoint(checkpoint: str, folder: Path) -> str:
    """A copy of an official-format ``checkpoint`` in ``folder`` whose object-score head's last
    bias is raised by PRESENT_SHIFT; its path."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = state["model"]
    head = sorted(k for k in weights if ".pred_obj_score_head." in k and k.endswith(".bias"))
    if not head:
        raise SystemExit(f"{checkpoint}: no object-score head (pred_obj_score_head) to raise")
    weights[head[-1]] = weights[head[-1]] + PRESENT_SHIFT  # the head's last layer
    path = folder / "present.pt"
    torch.save(state, path)
    return str(path)


# ---------------------------------------------------------------------- Meta's side


def official_available() -> bool:
    """Whether Meta's ``sam2`` package (and the hydra it builds with) can be imported."""
    return importlib.util.find_spec("sam2") is not None


def build_official(config_path: str, checkpoint: str, device: str):
    """Meta's SAM2VideoPredictor from a config's ``resolved`` tree (hydra ``instantiate``, as
    their ``build_sam2_video_predictor`` does after composing), checkpoint loaded strictly."""
    if not official_available():
        raise SystemExit(
            "Meta's sam2 package is not installed: SAM2_BUILD_CUDA=0 pip install --no-deps sam2==1.1.0 "
            "&& pip install hydra-core==1.3.2 iopath (see benchmarks/README.md)"
        )
    import sam2  # noqa: F401  (initialises hydra's config module, as their builders expect)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = json.loads(Path(config_path).read_text())
    if "resolved" not in config:
        raise SystemExit(f"{config_path}: no 'resolved' tree (Meta's side is built from it)")
    predictor = instantiate(OmegaConf.create(config["resolved"]), _recursive_=True)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    predictor.load_state_dict(state, strict=True)
    return predictor.to(device).eval()


def _official_frames(
    frames: Sequence[np.ndarray], image_size: int, offload_video_to_cpu: bool, compute_device, **_
):
    """Stands in for Meta's ``load_video_frames``: what their JPEG loader does to each decoded
    frame (Pillow's default resize to image_size, /255, ImageNet mean/std), from arrays."""
    from PIL import Image

    images = torch.zeros(len(frames), 3, image_size, image_size, dtype=torch.float32)
    for i, frame in enumerate(frames):
        resized = np.array(Image.fromarray(frame).resize((image_size, image_size)))
        images[i] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    if not offload_video_to_cpu:
        images, mean, std = (
            images.to(compute_device),
            mean.to(compute_device),
            std.to(compute_device),
        )
    images -= mean
    images /= std
    height, width = frames[0].shape[:2]
    return images, height, width


def _no_progress_bar(iterable, **_):
    return iterable


@contextlib.contextmanager
def _in_memory_and_quiet():
    """Meta's predictor reading the arrays (see _official_frames) and drawing no progress bars
    (ours draws none)."""
    import sam2.sam2_video_predictor as video_predictor

    originals = video_predictor.load_video_frames, video_predictor.tqdm
    video_predictor.load_video_frames = lambda video_path, **kw: _official_frames(video_path, **kw)
    video_predictor.tqdm = _no_progress_bar
    try:
        yield
    finally:
        video_predictor.load_video_frames, video_predictor.tqdm = originals


def official_job(
    predictor, frames: Sequence[np.ndarray], clicks: np.ndarray
) -> Iterator[tuple[int, torch.Tensor]]:
    """Meta's whole job: (frame index, N x H x W mask logits) per frame, frame 0 first."""
    with _in_memory_and_quiet():
        state = predictor.init_state(frames)
        for i, xy in enumerate(clicks):
            predictor.add_new_points_or_box(
                state,
                frame_idx=0,
                obj_id=i + 1,
                points=xy[None].astype(np.float32),
                labels=np.ones(1, np.int32),
            )
        for frame, _, logits in predictor.propagate_in_video(state):
            yield frame, logits[:, 0]


# ---------------------------------------------------------------------- our side


def ours_job(
    model, frames: Sequence[np.ndarray], prompts: list, options
) -> Iterator[tuple[int, torch.Tensor]]:
    """Our whole job: (frame index, N x H x W mask logits) per frame, frame 0 first."""
    from sam2_core.frames import ArrayFrames
    from sam2_core.tracker import VideoSession, track_session

    session = VideoSession(model, ArrayFrames(frames), options)
    for result in track_session(session, prompts, bounded=True):
        yield result.frame_index, result.mask_logits


# ---------------------------------------------------------------------- timing


@dataclass
class PassResult:
    whole_s: float
    steady_s: list[float]  # one per steady-state frame
    masks: list[torch.Tensor] | None  # per frame, N x H x W bool on the CPU


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pass(
    job: Callable[[], Iterator[tuple[int, torch.Tensor]]],
    warmup: int,
    device: str,
    keep_masks: bool = False,
    on_frame: Callable[[int, float], None] | None = None,
) -> PassResult:
    """Run one whole job; ``on_frame(k, seconds)`` is called after each frame (untimed)."""
    masks: list[torch.Tensor] = []
    steady: list[float] = []
    _sync(device)
    start = last = time.perf_counter()
    untimed = 0.0
    for k, (frame, logits) in enumerate(job()):
        if frame != k:
            raise RuntimeError(f"frames out of order: got {frame} at position {k}")
        mask = (logits > 0).cpu()
        _sync(device)
        now = time.perf_counter()
        if k > warmup:
            steady.append(now - last)
        if keep_masks:
            masks.append(mask)
        if on_frame is not None:
            on_frame(k, now - last)
            after = time.perf_counter()
            untimed += after - now
            now = after
        last = now
    return PassResult(last - start - untimed, steady, masks if keep_masks else None)


class ModuleTimer:
    """Seconds spent inside each of PARTS, counted from the outermost call into any module of
    that part (so a direct call into a submodule is counted too)."""

    def __init__(self, model: torch.nn.Module, device: str):
        self.device = device
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._depth = dict.fromkeys(PARTS, 0)
        self._start = dict.fromkeys(PARTS, 0.0)
        self._handles = []
        for part in PARTS:
            for module in getattr(model, part).modules():
                self._handles.append(module.register_forward_pre_hook(self._enter(part)))
                self._handles.append(module.register_forward_hook(self._leave(part)))

    def _enter(self, part: str):
        def hook(*_):
            if self._depth[part] == 0:
                _sync(self.device)
                self._start[part] = time.perf_counter()
            self._depth[part] += 1

        return hook

    def _leave(self, part: str):
        def hook(*_):
            self._depth[part] -= 1
            if self._depth[part] == 0:
                _sync(self.device)
                self.seconds[part] += time.perf_counter() - self._start[part]

        return hook

    def take(self) -> dict[str, float]:
        """Seconds per part since the last take."""
        seconds, self.seconds = self.seconds, dict.fromkeys(PARTS, 0.0)
        return seconds

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def mask_agreement(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict:
    """IoU per object per frame of ``other``'s masks against ``reference``'s (both empty: 1), and
    the share of the reference's object-frames where the object is present (a non-empty mask):
    absent objects cost less on both sides (no memory or upsampling work that varies)."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} frames against {len(other)}")
    ious, present = [], []
    for a, b in zip(reference, other):
        present.append(a.flatten(1).any(1))
        inter = (a & b).flatten(1).sum(1).double()
        union = (a | b).flatten(1).sum(1).double()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
    iou = torch.cat(ious)
    return {
        "object_frames": int(iou.numel()),
        "mean_iou": float(iou.mean()),
        "min_iou": float(iou.min()),
        "below_0_99": int((iou < 0.99).sum()),
        "reference_present": float(torch.cat(present).double().mean()),
    }


# ---------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict:
    env = environment()
    env["versions"]["sam2"] = _package_version("sam2")
    env["versions"]["hydra-core"] = _package_version("hydra-core")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    checkpoint = args.checkpoint
    with tempfile.TemporaryDirectory() as folder:
        if args.present:
            checkpoint = always_present_checkpoint(args.checkpoint, Path(folder))
        official = build_official(args.model, checkpoint, args.device)
        ours = load_model(args.model, checkpoint, args.device)
    height, width = args.size
    source = MovingDiscs(args.frames, height, width, num_discs=max(args.objects))
    frames = [source[i] for i in range(len(source))]
    ours_variants = [v for v in args.variants if v != "official"]
    options = {
        v: dataclasses.replace(
            tracker_options(
                "float32", True, prefetch_frames=OURS_OPTIONS[v].get("prefetch_frames")
            ),
            **{k: x for k, x in OURS_OPTIONS[v].items() if k != "prefetch_frames"},
        )
        for v in ours_variants
    }

    def job(variant: str, n: int, timed_parts: bool = False):
        if variant == "official":
            clicks = source.centres(0)[:n]
            return lambda: official_job(official, frames, clicks)
        prompts = click_prompts(source, n)
        chosen = options[variant]
        if timed_parts:  # the part timers time one thread: frames encoded in turn
            chosen = dataclasses.replace(chosen, encode_ahead=False)
        return lambda: ours_job(ours, frames, prompts, chosen)

    agreement: dict[int, dict] = {}
    for n in args.objects:  # untimed: masks compared, and both sides warmed up
        reference = time_pass(job("official", n), args.warmup, args.device, keep_masks=True).masks
        agreement[n] = {}
        for v in ours_variants:
            agreement[n][v] = mask_agreement(
                reference, time_pass(job(v, n), args.warmup, args.device, keep_masks=True).masks
            )
        del reference

    passes: dict[tuple[int, str], list[PassResult]] = {}
    for rep in range(args.repeats):
        for n in args.objects:
            shift = rep % len(args.variants)
            for v in args.variants[shift:] + args.variants[:shift]:
                passes.setdefault((n, v), []).append(time_pass(job(v, n), args.warmup, args.device))

    breakdown: dict[int, dict] = {}
    if args.breakdown:
        for n in args.objects:
            breakdown[n] = {}
            for v in args.variants:
                breakdown[n][v] = part_breakdown(
                    official if v == "official" else ours, job(v, n, timed_parts=True), args
                )

    results = []
    for n in args.objects:
        entry: dict = {"objects": n, "target": TARGETS.get(n)}
        for v in args.variants:
            runs = passes[(n, v)]
            steady = latency_stats([t for r in runs for t in r.steady_s])
            steady["frames_per_s"] = steady.pop("per_s")
            whole = [r.whole_s for r in runs]
            entry[v] = {
                "whole_job_s": whole,
                "whole_job_median_s": float(np.median(whole)),
                "whole_job_min_s": float(np.min(whole)),
                "whole_job_frames_per_s": args.frames / float(np.median(whole)),
                "steady": steady,
            }
        for v in ours_variants:
            entry[v]["speedup_whole_job"] = (
                entry["official"]["whole_job_median_s"] / entry[v]["whole_job_median_s"]
            )
            entry[v]["speedup_whole_job_min"] = (
                entry["official"]["whole_job_min_s"] / entry[v]["whole_job_min_s"]
            )
            entry[v]["speedup_steady"] = (
                entry[v]["steady"]["frames_per_s"] / entry["official"]["steady"]["frames_per_s"]
            )
            entry[v]["speedup_steady_median"] = (
                entry["official"]["steady"]["median_ms"] / entry[v]["steady"]["median_ms"]
            )
            entry[v]["masks_vs_official"] = agreement[n][v]
        if n in breakdown:
            entry["breakdown_ms_per_frame"] = breakdown[n]
        results.append(entry)

    settings = {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "objects_kept_present": args.present,
        "image_size": int(ours.image_size),
        "parameters": int(sum(p.numel() for p in ours.parameters())),
        "objects": args.objects,
        "frames": args.frames,
        "warmup": args.warmup,
        "steady_frames_per_pass": args.frames - 1 - args.warmup,
        "repeats": args.repeats,
        "video_size": [height, width],
        "device": args.device,
        "variants": args.variants,
        "ours_prefetch_frames": {v: options[v].prefetch_frames for v in ours_variants},
        "ours_frame_resize": {v: options[v].frame_resize for v in ours_variants},
        "ours_encode_ahead": {v: options[v].encode_ahead for v in ours_variants},
        "prompts": "one positive click per object on frame 0 at the disc centres",
        "frames_source": "MovingDiscs, pre-rendered uint8 arrays in memory, the same for both sides",
        "official": "sam2 SAM2VideoPredictor built from the config's resolved tree; init_state's frame loader "
        "replaced by the same preprocessing on the in-memory arrays (no JPEG); memory stored in bfloat16 as it does",
        "ours": "sam2_core.tracker track_session(bounded=True) on a VideoSession over ArrayFrames; "
        "TrackerOptions() (float32 memory), prefetch as listed",
        "timed": "whole job: setup + prompts + every frame; steady: time between frames yielded, "
        "after frame 0 and the warm-up frames; masks = logits > 0 on the CPU on both sides",
        "targets": {str(k): v for k, v in TARGETS.items()},
    }
    return report("bench_vs_official", settings, {"results": results}, env)


def part_breakdown(model: torch.nn.Module, job, args: argparse.Namespace, passes: int = 2) -> dict:
    """ms per steady frame in each of PARTS and the rest, over ``passes`` passes with module
    timers. A shared machine stalls some frames for whole time slices: only frames within 1.25x
    of the median frame are averaged (``frames_kept`` of ``frames``)."""
    timer = ModuleTimer(model, args.device)
    rows: list[tuple[float, dict[str, float]]] = []

    def record(k: int, seconds: float) -> None:
        parts = timer.take()
        if k > args.warmup:
            rows.append((seconds, parts))

    try:
        for _ in range(passes):
            time_pass(job, args.warmup, args.device, on_frame=record)
    finally:
        timer.remove()
    limit = 1.25 * float(np.median([t for t, _ in rows]))
    kept = [(t, parts) for t, parts in rows if t <= limit]
    out = {"frames": len(rows), "frames_kept": len(kept)}
    out["total_ms"] = float(np.mean([t for t, _ in kept]) * 1e3)
    for p in PARTS:
        out[f"{p}_ms"] = float(np.mean([parts[p] for _, parts in kept]) * 1e3)
    out["rest_ms"] = out["total_ms"] - sum(out[f"{p}_ms"] for p in PARTS)
    return out


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def print_report(doc: dict) -> None:
    s = doc["settings"]
    rows = []
    for e in doc["figures"]["results"]:
        for v in s["variants"]:
            r = e[v]
            rows.append(
                [
                    e["objects"],
                    v,
                    r["whole_job_median_s"],
                    r["steady"]["frames_per_s"],
                    r["steady"]["median_ms"],
                    r.get("speedup_whole_job", float("nan")),
                    r.get("speedup_steady_median", float("nan")),
                    r["masks_vs_official"]["mean_iou"]
                    if "masks_vs_official" in r
                    else float("nan"),
                    r["masks_vs_official"]["reference_present"]
                    if "masks_vs_official" in r
                    else float("nan"),
                ]
            )
    title = (
        f"ours vs Meta's SAM2VideoPredictor: {Path(s['model']).parent.name or s['model']} at {s['image_size']}, "
        f"{s['device']}, video {s['video_size'][0]}x{s['video_size'][1]} x {s['frames']} frames, {s['repeats']} passes"
    )
    print_table(
        [
            "objects",
            "variant",
            "whole job s",
            "steady frames/s",
            "steady median ms",
            "x whole",
            "x steady",
            "mean IoU",
            "present",
        ],
        rows,
        title,
    )
    for e in doc["figures"]["results"]:
        if "breakdown_ms_per_frame" in e:
            b = e["breakdown_ms_per_frame"]
            keys = ["total_ms", *(f"{p}_ms" for p in PARTS), "rest_ms"]
            print_table(
                ["variant", *(k.removesuffix("_ms") for k in keys)],
                [[v, *(b[v][k] for k in keys)] for v in b],
                f"ms per steady frame, {e['objects']} objects",
            )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
