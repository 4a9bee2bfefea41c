"""``python -m jobs train``: fine-tune a SAM 2 model, or train a small one from scratch, on clips
of synthetic videos with exact ground truth.

Writes ``model.pt`` (official checkpoint format), ``config.json`` ({"resolved": tree,
"training": record}) and ``train_state.pt`` (for ``--resume``) under ``--output``; progress
lines show the loss terms and throughput (clips/s). With ``--eval-videos N`` each checkpoint
is also scored (J&F) on held-out synthetic videos of seeds 0..N-1 (training seeds start at
``--first-seed``, 1000 by default), prompted with one click per object as the
``make-synthetic`` manifest does. Exit status: 0 done; 1 bad options or inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from jobs.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from pipeline.synthetic_eval import synthetic_jf
from sam2_core.synthetic import SyntheticConfig
from sam2_core.training import (
    CONFIG_FILE,
    LossWeights,
    PromptOptions,
    SyntheticClips,
    TrainConfig,
    Trainer,
    build_for_training,
)


def _schedule(text: str) -> tuple[tuple[int, int], ...]:
    """'0:4,300:8' -> ((0, 4), (300, 8))."""
    out = []
    for part in filter(None, text.split(",")):
        try:
            step, length = part.split(":")
            out.append((int(step), int(length)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--clip-len-schedule wants STEP:LEN[,STEP:LEN...], got {text!r}") from None
        if out[-1][0] < 0 or out[-1][1] < 1:
            raise argparse.ArgumentTypeError(f"--clip-len-schedule: bad entry {part!r} (step >= 0, length >= 1)")
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    s = SyntheticConfig()
    p = PromptOptions()
    parser.add_argument("--config", "--model", dest="config", help="official model name or config file (YAML or config.json); required unless --resume")
    parser.add_argument("--init-checkpoint", help="start from these weights (official format), loaded strictly")
    parser.add_argument("--output", required=True, help="output folder (model.pt, config.json, train_state.pt)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output (its config.json, model.pt and train_state.pt)")
    parser.add_argument("--steps", type=positive_int, default=d.steps, help=f"optimisation steps in all (default {d.steps})")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"clips per step (default {d.batch_size})")
    parser.add_argument("--clip-len", type=positive_int, default=d.clip_len, help=f"frames per clip (default {d.clip_len})")
    parser.add_argument("--clip-len-schedule", type=_schedule, default=(), help="curriculum STEP:LEN,... (e.g. 0:4,300:8)")
    parser.add_argument("--lr", type=positive_float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    parser.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay)
    parser.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps)
    parser.add_argument("--min-lr-ratio", type=probability, default=d.min_lr_ratio, help="final lr / peak lr of the cosine decay")
    parser.add_argument("--grad-clip", type=non_negative_float, default=d.grad_clip, help="max gradient norm (0: off)")
    parser.add_argument("--freeze", action="append", default=[], help="parameter-name prefix to keep fixed (repeatable), e.g. image_encoder")
    parser.add_argument("--seed", type=non_negative_int, default=d.seed)
    parser.add_argument("--device", default="cpu", help="torch device (bfloat16 autocast on CUDA unless --no-autocast)")
    parser.add_argument("--no-autocast", action="store_true")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1: best on busy shared machines)")
    parser.add_argument("--log-every", type=positive_int, default=d.log_every)
    parser.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every)
    g = parser.add_argument_group("synthetic training data")
    g.add_argument("--height", type=positive_int, default=128, help="frame height (default 128)")
    g.add_argument("--width", type=positive_int, default=128, help="frame width (default 128)")
    g.add_argument("--frames", type=positive_int, default=48, help="frames per generated video (default 48)")
    g.add_argument("--min-objects", type=positive_int, default=1)
    g.add_argument("--max-objects", type=positive_int, default=3)
    g.add_argument("--first-seed", type=non_negative_int, default=1000, help="first training seed (default 1000; held-out evaluation uses 0..N-1)")
    g.add_argument("--num-seeds", type=positive_int, default=None, help="training seeds to draw from (default: unbounded)")
    g.add_argument("--video-reuse", type=positive_float, default=4.0, help="clips cut from each generated video on average (default 4)")
    g.add_argument("--pixel-noise", type=non_negative_float, default=s.pixel_noise)
    g = parser.add_argument_group("simulated prompts")
    g.add_argument("--box-prob", type=probability, default=p.box_prob)
    g.add_argument("--mask-prob", type=probability, default=p.mask_prob)
    g.add_argument("--max-corrections", type=non_negative_int, default=p.max_corrections)
    g.add_argument("--correct-later-prob", type=probability, default=p.correct_later_prob)
    g.add_argument("--embedding-penalty", type=non_negative_float, default=0.0,
                   help="weight of a penalty on image embeddings with mean square > 1 (default 0; the demo model used 1.0, training from scratch)")
    g.add_argument("--align-prompt-attention", action="store_true",
                   help="start the mask decoder's cross-attentions with equal query/key projections (training from scratch)")
    g.add_argument("--align-memory-attention", action="store_true",
                   help="start memory cross-attention local (rotary-aligned query/key biases; training from scratch)")
    g = parser.add_argument_group("held-out evaluation")
    g.add_argument("--eval-videos", type=non_negative_int, default=0, help="score each checkpoint on synthetic seeds 0..N-1 (default 0: off)")


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    return SyntheticConfig(
        height=args.height, width=args.width, num_frames=args.frames,
        min_objects=args.min_objects, max_objects=args.max_objects, pixel_noise=args.pixel_noise,
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(int(args.threads), 1))
    out = Path(args.output)
    try:
        if args.resume:
            doc_path = out / CONFIG_FILE
            if not doc_path.is_file():
                raise FileNotFoundError(f"--resume: {doc_path} not found")
            model, tree = build_for_training(str(doc_path))
        else:
            if not args.config:
                raise ValueError("--config (an official name or a config file) is required unless --resume")
            model, tree = build_for_training(args.config, args.init_checkpoint)
        synth = synthetic_config(args)
        prompts = PromptOptions(
            box_prob=args.box_prob, mask_prob=args.mask_prob,
            max_corrections=args.max_corrections, correct_later_prob=args.correct_later_prob,
        )
        cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, clip_len=args.clip_len,
            clip_len_schedule=args.clip_len_schedule, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
            freeze=tuple(args.freeze), seed=args.seed, device=args.device, autocast=not args.no_autocast,
            log_every=args.log_every, checkpoint_every=args.checkpoint_every, prompts=prompts,
            loss=LossWeights(embedding_rms=args.embedding_penalty),
            align_prompt_attention=bool(args.align_prompt_attention) and not args.resume,
            align_memory_attention=bool(args.align_memory_attention) and not args.resume,
        )
        source = SyntheticClips(
            synth, first_seed=args.first_seed, num_seeds=args.num_seeds,
            max_objects=args.max_objects, reuse=args.video_reuse,
        )
        if args.eval_videos and args.first_seed < args.eval_videos:
            raise ValueError(f"--first-seed {args.first_seed} overlaps the held-out seeds 0..{args.eval_videos - 1}")
        record = {
            "command": "python -m jobs train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "",
            "synthetic": {k: getattr(synth, k) for k in synth.__dataclass_fields__},
            "first_seed": args.first_seed,
            "num_seeds": args.num_seeds,
            "device": str(args.device),
            "init_checkpoint": args.init_checkpoint,
        }
        trainer = Trainer(model, tree, source, out, cfg, extra_record=record)
        if args.resume:
            trainer.resume()
            print(f"resumed at step {trainer.step}", flush=True)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1

    started = time.time()

    def on_log(st) -> None:
        terms = " ".join(f"{k}={v:.3f}" for k, v in st.terms.items())
        print(
            f"step {st.step}/{cfg.steps} loss={st.loss:.3f} ({terms}) lr={st.lr:.2e} "
            f"clip_len={st.clip_len} objects/batch={st.objects} {st.clips_per_s:.2f} clips/s "
            f"elapsed={time.time() - started:.0f}s",
            flush=True,
        )

    def on_checkpoint(step: int, path: Path) -> None:
        line = f"checkpoint step {step}: {path}"
        if args.eval_videos:
            t0 = time.time()
            report = synthetic_jf(trainer.model, range(args.eval_videos), synth)
            line += f" held-out J&F={report.jf:.4f} J={report.j:.4f} F={report.f:.4f} ({time.time() - t0:.0f}s)"
            with open(out / "eval.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "J&F": report.jf, "J": report.j, "F": report.f, "videos": args.eval_videos}) + "\n")
        print(line, flush=True)

    trainer.train(on_log=on_log, on_checkpoint=on_checkpoint)
    print(f"done: {trainer.step} steps, {trainer.elapsed:.0f}s training time; model {out / 'model.pt'}", flush=True)
    return 0
