"""``python -m jobs train``: fine-tune a SAM 2 model, or train a small one from scratch, on clips
of videos with ground truth: a label run's output, DAVIS / YouTube-VOS or SA-V folders
(``--data``, see :mod:`pipeline.training.data`), or synthetic videos (the default).

Writes ``model.pt`` (official checkpoint format), ``config.json`` ({"resolved": tree,
"training": record}) and ``train_state.pt`` (for ``--resume``) under ``--output``; progress
lines show the loss terms and throughput (clips/s). With ``--eval-videos N`` each checkpoint
is also scored (J&F) on N held-out videos (real data: N of its videos, chosen by ``--seed``
and never trained on; synthetic: seeds 0..N-1, training seeds start at ``--first-seed``),
each object prompted with one click as the ``make-synthetic`` manifest does; the best
checkpoint is kept in ``OUTPUT/best/``. ``--workers N`` trains data-parallel on Ray Train
(see :mod:`jobs.train_distributed`). Exit status: 0 done; 1 bad options or inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from jobs.argtypes import (
    json_object,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from pipeline.storage import absolute_uri
from pipeline.training.data import (
    FAMILIES,
    GENERATED,
    SYNTHETIC,
    DataSpec,
    TrainingData,
    load_training_data,
    parse_data_spec,
)
from pipeline.training.output import TrainOutput
from sam2_core.synthetic import SyntheticConfig
from sam2_core.training import (
    CONFIG_FILE,
    MODEL_FILE,
    LossWeights,
    PromptOptions,
    Replicas,
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
            raise argparse.ArgumentTypeError(
                f"--clip-len-schedule wants STEP:LEN[,STEP:LEN...], got {text!r}"
            ) from None
        if out[-1][0] < 0 or out[-1][1] < 1:
            raise argparse.ArgumentTypeError(
                f"--clip-len-schedule: bad entry {part!r} (step >= 0, length >= 1)"
            )
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    s = SyntheticConfig()
    p = PromptOptions()
    parser.add_argument(
        "--config",
        "--model",
        dest="config",
        help="official model name or config file (YAML or config.json); required unless --resume",
    )
    parser.add_argument(
        "--init-checkpoint", help="start from these weights (official format), loaded strictly"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="output folder or any fsspec URL such as s3://bucket/run (model.pt, config.json, "
        "train_state.pt; a URL is written from a local staging folder after every checkpoint)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output (its config.json, model.pt and train_state.pt)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=d.steps,
        help=f"optimisation steps in all (default {d.steps})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"clips per step (default {d.batch_size})",
    )
    parser.add_argument(
        "--clip-len",
        type=positive_int,
        default=d.clip_len,
        help=f"frames per clip (default {d.clip_len})",
    )
    parser.add_argument(
        "--clip-len-schedule",
        type=_schedule,
        default=(),
        help="curriculum STEP:LEN,... (e.g. 0:4,300:8)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=d.lr, help=f"peak learning rate (default {d.lr})"
    )
    parser.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay)
    parser.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps)
    parser.add_argument(
        "--min-lr-ratio",
        type=probability,
        default=d.min_lr_ratio,
        help="final lr / peak lr of the cosine decay",
    )
    parser.add_argument(
        "--grad-clip",
        type=non_negative_float,
        default=d.grad_clip,
        help="max gradient norm (0: off)",
    )
    parser.add_argument(
        "--freeze",
        action="append",
        default=[],
        help="parameter-name prefix to keep fixed (repeatable), e.g. image_encoder",
    )
    parser.add_argument("--seed", type=non_negative_int, default=d.seed)
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device (bfloat16 autocast on CUDA unless --no-autocast)",
    )
    parser.add_argument("--no-autocast", action="store_true")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default 1: best on busy shared machines)",
    )
    parser.add_argument("--log-every", type=positive_int, default=d.log_every)
    parser.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every)
    parser.add_argument(
        "--micro-batch",
        type=non_negative_int,
        default=d.micro_batch,
        help="clips per forward/backward, gradients summed over a step (default 0: each worker's whole share)",
    )
    parser.add_argument(
        "--prefetch-steps",
        type=non_negative_int,
        default=d.prefetch_steps,
        help=f"steps of clips a background thread loads ahead (default {d.prefetch_steps}; 0: load in the loop)",
    )
    g = parser.add_argument_group("training data")
    g.add_argument(
        "--data",
        action="append",
        type=_data_spec,
        default=[],
        metavar="SPEC",
        help="run:URI (a `jobs label` output), davis:URI (JPEGImages/ + Annotations/), sav:URI "
        "(<video>.mp4 + <video>_manual.json), synthetic (default) or families:NAME[=WEIGHT],... "
        "(synthetic scene families; blobs is synthetic's generator with the options below); "
        "repeatable, URI any fsspec URL",
    )
    g.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        help="fsspec options for --data URLs (JSON)",
    )
    g = parser.add_argument_group("distributed training (Ray Train)")
    g.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="data-parallel workers (default 1: this process, no Ray)",
    )
    g.add_argument(
        "--gpus-per-worker",
        type=non_negative_float,
        default=0.0,
        help="GPUs per worker (default 0: CPU, gloo)",
    )
    g.add_argument("--cpus-per-worker", type=positive_float, default=1.0)
    g.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (default: $RAY_ADDRESS or a local one)",
    )
    g.add_argument(
        "--storage",
        default=None,
        help="where Ray Train keeps checkpoints (any fsspec URI; default OUTPUT/ray)",
    )
    g.add_argument(
        "--max-failures",
        type=non_negative_int,
        default=3,
        help="restarts from the last checkpoint after a lost worker (default 3)",
    )
    g = parser.add_argument_group("synthetic training data")
    g.add_argument("--height", type=positive_int, default=128, help="frame height (default 128)")
    g.add_argument("--width", type=positive_int, default=128, help="frame width (default 128)")
    g.add_argument(
        "--frames", type=positive_int, default=48, help="frames per generated video (default 48)"
    )
    g.add_argument("--min-objects", type=positive_int, default=1)
    g.add_argument("--max-objects", type=positive_int, default=3)
    g.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=1000,
        help="first training seed (default 1000; held-out evaluation uses 0..N-1)",
    )
    g.add_argument(
        "--num-seeds",
        type=positive_int,
        default=None,
        help="training seeds to draw from (default: unbounded)",
    )
    g.add_argument(
        "--video-reuse",
        type=positive_float,
        default=4.0,
        help="clips cut from each generated video on average (default 4)",
    )
    g.add_argument("--pixel-noise", type=non_negative_float, default=s.pixel_noise)
    g = parser.add_argument_group("simulated prompts")
    g.add_argument("--box-prob", type=probability, default=p.box_prob)
    g.add_argument("--mask-prob", type=probability, default=p.mask_prob)
    g.add_argument("--max-corrections", type=non_negative_int, default=p.max_corrections)
    g.add_argument("--correct-later-prob", type=probability, default=p.correct_later_prob)
    g.add_argument(
        "--embedding-penalty",
        type=non_negative_float,
        default=0.0,
        help="weight of a penalty on image embeddings with mean square > 1 (default 0; the demo model used 1.0, training from scratch)",
    )
    g.add_argument(
        "--align-prompt-attention",
        action="store_true",
        help="start the mask decoder's cross-attentions with equal query/key projections (training from scratch)",
    )
    g.add_argument(
        "--align-memory-attention",
        action="store_true",
        help="start memory cross-attention local (rotary-aligned query/key biases; training from scratch)",
    )
    g = parser.add_argument_group("held-out evaluation")
    g.add_argument(
        "--eval-videos",
        type=non_negative_int,
        default=0,
        help="score each checkpoint (J&F) on N held-out videos and keep the best in OUTPUT/best/ "
        "(synthetic: seeds 0..N-1; default 0: off)",
    )


def _data_spec(text: str) -> DataSpec:
    try:
        return parse_data_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    return SyntheticConfig(
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        pixel_noise=args.pixel_noise,
    )


def data_specs(args: argparse.Namespace) -> list[DataSpec]:
    specs = list(args.data) or [DataSpec(SYNTHETIC)]
    if len(specs) > 1 and any(spec.kind in GENERATED for spec in specs):
        raise ValueError("--data synthetic / families: cannot be mixed with other --data specs")
    return specs


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` whose local paths are absolute, so that Ray workers and a cluster's
    job (other working directories) name the same files; paths that do not exist here (a
    path on the cluster) and URLs are kept as given, ``--output`` is always made absolute."""
    args = argparse.Namespace(**vars(args))
    args.output = absolute_uri(args.output)
    for name in ("config", "init_checkpoint", "storage"):
        value = getattr(args, name)
        if value and Path(value).exists():
            setattr(args, name, absolute_uri(value))
    args.data = [
        type(spec)(
            spec.kind, absolute_uri(spec.uri) if spec.uri and Path(spec.uri).exists() else spec.uri
        )
        for spec in args.data
    ]
    return args


def train_config(args: argparse.Namespace) -> TrainConfig:
    prompts = PromptOptions(
        box_prob=args.box_prob,
        mask_prob=args.mask_prob,
        max_corrections=args.max_corrections,
        correct_later_prob=args.correct_later_prob,
    )
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        clip_len=args.clip_len,
        clip_len_schedule=args.clip_len_schedule,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip,
        freeze=tuple(args.freeze),
        seed=args.seed,
        device=args.device,
        autocast=not args.no_autocast,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        prompts=prompts,
        loss=LossWeights(embedding_rms=args.embedding_penalty),
        align_prompt_attention=bool(args.align_prompt_attention) and not args.resume,
        align_memory_attention=bool(args.align_memory_attention) and not args.resume,
        micro_batch=args.micro_batch,
        prefetch_steps=args.prefetch_steps,
    )


def _mixture(spec: DataSpec, blobs: SyntheticConfig):
    """The seed -> video function of a ``families:`` spec (None for plain synthetic)."""
    if spec.kind != FAMILIES:
        return None
    from sam2_core.synthetic_families import FamilyMixture, parse_family_weights

    return FamilyMixture(parse_family_weights(spec.uri), blobs)


class TrainJob:
    """Everything one training process needs, built from the command line: the model, the clip
    source, the trainer, and the held-out scoring run at each checkpoint (main replica only)."""

    def __init__(
        self,
        args: argparse.Namespace,
        replicas: Replicas | None = None,
        resume: bool | None = None,
        output: TrainOutput | None = None,
    ):
        self.args = args
        resume = args.resume if resume is None else resume
        self.output = output or TrainOutput.open(args.output, args.storage_options, resume)
        self.out = self.output.local
        torch.manual_seed(args.seed)  # the same initial weights in every process, every time
        if resume:
            doc_path = self.out / CONFIG_FILE
            if not doc_path.is_file():
                raise FileNotFoundError(f"--resume: {self.output.describe(CONFIG_FILE)} not found")
            model, tree = build_for_training(str(doc_path))
        else:
            if not args.config:
                raise ValueError(
                    "--config (an official name or a config file) is required unless --resume"
                )
            model, tree = build_for_training(args.config, args.init_checkpoint)
        cfg = train_config(args)
        specs = data_specs(args)
        self.synth = synthetic_config(args)
        self.data: TrainingData | None = None
        record = {
            "command": "python -m jobs train " + " ".join(sys.argv[2:])
            if len(sys.argv) > 1
            else "",
            "data": [str(spec) for spec in specs],
            "device": str(args.device),
            "init_checkpoint": args.init_checkpoint,
            "workers": args.workers,
        }
        if specs[0].kind in GENERATED:
            if args.eval_videos and args.first_seed < args.eval_videos:
                raise ValueError(
                    f"--first-seed {args.first_seed} overlaps the held-out seeds 0..{args.eval_videos - 1}"
                )
            source = SyntheticClips(
                self.synth,
                first_seed=args.first_seed,
                num_seeds=args.num_seeds,
                max_objects=args.max_objects,
                reuse=args.video_reuse,
                generate=_mixture(specs[0], self.synth),
            )
            record |= {
                "synthetic": {k: getattr(self.synth, k) for k in self.synth.__dataclass_fields__},
                "first_seed": args.first_seed,
                "num_seeds": args.num_seeds,
            }
        else:
            from pipeline.training.videos import TableClips

            self.data = load_training_data(specs, args.storage_options, args.eval_videos, args.seed)
            source = TableClips(self.data.train, args.storage_options, max_objects=args.max_objects)
            record |= {
                "train_videos": [v.video_id for v in self.data.train],
                "heldout_videos": [v.video_id for v in self.data.heldout],
            }
        self.trainer = Trainer(
            model, tree, source, self.out, cfg, extra_record=record, replicas=replicas
        )
        if resume:
            self.trainer.resume()

    def describe_data(self) -> str:
        if self.data is None:
            return f"synthetic videos ({self.args.data[0] if self.args.data else SYNTHETIC})" + (
                f"; held out: seeds 0..{self.args.eval_videos - 1}" if self.args.eval_videos else ""
            )
        return f"{len(self.data.train)} training video(s); held out: " + (
            ", ".join(v.video_id for v in self.data.heldout) or "none"
        )

    def score(self, step: int) -> str:
        """Held-out J&F of the current weights, appended to eval.jsonl; the best weights are
        copied to OUTPUT/best/. Returns the line to print ("" without --eval-videos)."""
        from pipeline.training.heldout import keep_best

        if not self.args.eval_videos:
            return ""
        t0 = time.time()
        model = self.trainer.model
        if self.data is None:
            from pipeline.synthetic_eval import synthetic_jf

            report = synthetic_jf(model, range(self.args.eval_videos), self.synth)
        else:
            from pipeline.training.heldout import heldout_jf

            report = heldout_jf(model, self.data.heldout, self.args.storage_options)
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "J&F": report.jf,
                        "J": report.j,
                        "F": report.f,
                        "videos": self.args.eval_videos,
                    }
                )
                + "\n"
            )
        best = keep_best(self.out, step, report.jf, (MODEL_FILE, CONFIG_FILE))
        return (
            f" held-out J&F={report.jf:.4f} J={report.j:.4f} F={report.f:.4f} ({time.time() - t0:.0f}s)"
            + (" best so far: copied to best/" if best else "")
        )


def log_line(st, steps: int, started: float) -> str:
    terms = " ".join(f"{k}={v:.3f}" for k, v in st.terms.items())
    return (
        f"step {st.step}/{steps} loss={st.loss:.3f} ({terms}) lr={st.lr:.2e} "
        f"clip_len={st.clip_len} objects/batch={st.objects} {st.clips_per_s:.2f} clips/s "
        f"elapsed={time.time() - started:.0f}s"
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(int(args.threads), 1))
    if args.workers > 1 or args.ray_address:
        from jobs.train_distributed import run_distributed

        return run_distributed(args)
    try:
        job = TrainJob(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    trainer = job.trainer
    if args.resume:
        print(f"resumed at step {trainer.step}", flush=True)
    print(f"data: {job.describe_data()}", flush=True)
    started = time.time()

    def on_checkpoint(step: int, path: Path) -> None:
        line = job.score(step)
        job.output.push()
        print(f"checkpoint step {step}: {job.output.describe(MODEL_FILE)}" + line, flush=True)

    trainer.train(
        on_log=lambda st: print(log_line(st, trainer.config.steps, started), flush=True),
        on_checkpoint=on_checkpoint,
    )
    job.output.close()
    print(
        f"done: {trainer.step} steps, {trainer.elapsed:.0f}s training time; "
        f"model {job.output.describe(MODEL_FILE)}",
        flush=True,
    )
    return 0
