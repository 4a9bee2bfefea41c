"""bfloat16 against float32: how far the masks move, per object and frame.

Tracks the same videos with the float32 path and with each reduced-precision option
(bfloat16 autocast with the default policy of ``sam2_core.modeling.precision``; bfloat16
stored memories; both) and compares every
object's mask on every frame by IoU. Videos are the demo model's held-out synthetic ones
(seeds below 1000), clicked as the make-synthetic manifest does; the model is the bundled demo
model unless ``--model``/``--checkpoint`` name another.

    python -m benchmarks.bench_dtype --seeds 0,1,2,3 --json out.json

With ``--case DIR`` (a recorded reference case directory such as ``../shared/sam2_reference/mini_a``)
it instead replays the recorded video cases under bfloat16 autocast with each model part alone in
reduced precision (``sam2_core.modeling.precision``), with the default policy and with every part,
and compares each output mask with the recorded float32 one (IoU; presence flips).

    python -m benchmarks.bench_dtype --case ../shared/sam2_reference/mini_a --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

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
    "autocast_bf16": {"autocast_dtype": torch.bfloat16},
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
    p.add_argument(
        "--model",
        default=None,
        help="official name or config path (default: the bundled demo model)",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint for --model")
    p.add_argument(
        "--seeds",
        type=seed_list,
        default=[0, 1, 2, 3],
        help="synthetic video seeds, 0..999 (default 0,1,2,3)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--case",
        default=None,
        help="recorded reference case directory: measure bfloat16 per model part there",
    )
    p.add_argument(
        "--cases",
        default="video,long",
        help="with --case: which recorded cases (default video,long)",
    )
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


ABSENT_LOGIT = -1024.0


def case_agreement(case_dir: str | Path, case: str, model, options) -> dict:
    """Replay ``case`` (``video`` or ``long``) of a recorded case directory with ``options`` and
    compare every output mask with the recorded float32 one: mean and min IoU of the masks
    (logits > 0) and presence flips (an object absent, every logit at -1024, in one only)."""
    from sam2_core.parity_video import replay_case

    case_dir = Path(case_dir)
    reference = np.load(case_dir / f"{case}_case.npz")
    ours = replay_case(
        case_dir / f"{case}_case.npz", case_dir / f"{case}_steps.json", model, options
    )
    ious, flips = [], 0
    for key, logits in ours.items():
        ref = reference[key]
        flips += int(bool((logits <= ABSENT_LOGIT).all()) != bool((ref <= ABSENT_LOGIT).all()))
        ious.append(_iou(logits > 0, ref > 0))
    return {
        "masks": len(ious),
        "mean_iou": float(np.mean(ious)),
        "min_iou": float(np.min(ious)),
        "presence_flips": flips,
    }


def _in_float32(fn):
    """``fn`` run with autocast off on float32 inputs (its result float32)."""

    def wrapped(*args, **kwargs):
        def f32(x):
            return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

        with torch.autocast(args[0].device.type, enabled=False):
            return fn(*map(f32, args), **{k: f32(v) for k, v in kwargs.items()})

    return wrapped


@contextlib.contextmanager
def attention_split(model, keep_float32: str):
    """Within memory attention's two attentions, keep only the projections (``"projections"``:
    q, k, v, out) or only the attention core (``"core"``: scaled dot-product attention with its
    softmax) in float32; the rest runs as autocast casts it. For measuring, not a policy."""
    from sam2_core.modeling import transformer

    if keep_float32 == "core":
        original = transformer.attention
        transformer.attention = _in_float32(original)
        try:
            yield
        finally:
            transformer.attention = original
        return
    linears = [
        m
        for name, m in model.memory_attention.named_modules()
        if name.endswith("_proj") and isinstance(m, torch.nn.Linear)
    ]
    for m in linears:
        m.forward = _in_float32(m.forward)
    try:
        yield
    finally:
        for m in linears:
            del m.forward


def _measure(figures: dict, name: str, args, model, options, parts) -> None:
    """Both cases with ``options``, then with bf16 stored memories too."""
    from sam2_core.tracker import TrackerOptions

    figures[name] = {
        case: case_agreement(args.case, case, model, options) for case in args.cases.split(",")
    }
    figures[name + " + bf16 memories"] = {
        case: case_agreement(
            args.case,
            case,
            model,
            TrackerOptions(
                memory_dtype=torch.bfloat16,
                autocast_dtype=None if parts is None else torch.bfloat16,
            ),
        )
        for case in args.cases.split(",")
    }


def run_parts(args: argparse.Namespace) -> dict:
    """Per model part: bfloat16 autocast confined to that part, on the recorded cases."""
    from sam2_core.modeling.precision import (
        AUTOCAST_PARTS,
        PART_GROUPS,
        autocast_parts,
        set_autocast_parts,
    )
    from sam2_core.parity import load_case_model
    from sam2_core.tracker import TrackerOptions

    env = environment()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_case_model(args.case).to(args.device)
    default = sorted(autocast_parts(model))
    policies = {
        "float32 (no autocast)": None,
        f"default policy ({', '.join(default) or 'none'})": default,
    }
    policies.update({f"{part} alone": [part] for part in AUTOCAST_PARTS})
    policies.update({f"{group} (all its parts)": [group] for group in PART_GROUPS})
    policies.update(
        {f"default + {part}": [*default, part] for part in AUTOCAST_PARTS if part not in default}
    )
    policies["every part"] = list(AUTOCAST_PARTS)
    splits = {
        "memory_attention, attention cores float32": "core",
        "memory_attention, attention projections float32": "projections",
    }
    policies.update({name: ["memory_attention"] for name in splits})
    figures: dict[str, dict] = {}
    for name, parts in policies.items():
        options = (
            TrackerOptions() if parts is None else TrackerOptions(autocast_dtype=torch.bfloat16)
        )
        set_autocast_parts(model, default if parts is None else parts)
        split = attention_split(model, splits[name]) if name in splits else contextlib.nullcontext()
        with split:
            _measure(figures, name, args, model, options, parts)
    set_autocast_parts(model, default)
    settings = {
        "case_dir": str(args.case),
        "cases": args.cases.split(","),
        "device": args.device,
        "reference": "the recorded float32 outputs of the official code (our float32 replay matches them, 0 sign flips)",
        "autocast": "torch.bfloat16 on the given parts only; the others float32 islands; "
        "layer norms in float32 under autocast on every device (CUDA's rule)",
        "iou": "per output mask (object, frame, step), masks = logits > 0",
    }
    return report("bench_dtype_parts", settings, {"policies": figures}, env)


def run(args: argparse.Namespace) -> dict:
    if args.case:
        return run_parts(args)
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
        prompts = entry_prompts(
            manifest_entry(f"{seed}.mp4", str(seed), video), ArrayFrames(video.frames)
        )
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
    if "policies" in doc["figures"]:
        rows = [
            [
                name,
                case,
                f["masks"],
                f"{f['mean_iou']:.4f}",
                f"{f['min_iou']:.3f}",
                f["presence_flips"],
            ]
            for name, cases in doc["figures"]["policies"].items()
            for case, f in cases.items()
        ]
        print_table(
            ["bfloat16 in", "case", "masks", "mean IoU", "min IoU", "presence flips"],
            rows,
            title="bfloat16 autocast by model part, against the recorded float32 outputs",
        )
        return
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
