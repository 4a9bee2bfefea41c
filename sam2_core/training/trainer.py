"""Training loop: AdamW with warm-up and cosine decay, gradient clipping, optional bfloat16
autocast on GPU, freezing by parameter-name prefix, and resumable checkpoints.

An output folder holds::

    model.pt          {"model": state_dict}  (the official checkpoint format)
    config.json       {"resolved": <official-style model tree>, "training": {...}}
    train_state.pt    optimizer, scheduler, step and random-generator state (for --resume)
    checkpoints/step_<n>.pt   the model at each checkpoint (official format)
    log.jsonl         one line per logged step

``model.pt`` and ``config.json`` load with ``sam2_core.build_model(config.json, model.pt)``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..config_tree import OFFICIAL_CONFIG_FILES, ConfigError, config_from_tree, official_tree
from ..modeling.sam2 import SAM2Model
from .clips import ClipBatch, ClipSource
from .forward import ClipForward, PromptOptions
from .loader import BackgroundBatches, BatchPlan, StepBatches, prompt_rng, step_batches
from .losses import LossWeights, embedding_penalty, step_losses, total_loss
from .replicas import Replicas
from .train_state import STATE_FILE, _atomic_save, read_train_state

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """What and how long to train.

    clip_len_schedule: ((step, clip_len), ...) switches the clip length from that step on
    (a curriculum; empty: always ``clip_len``). freeze: parameter-name prefixes kept fixed.
    align_prompt_attention: before training, give the mask decoder's cross-attentions equal
    query and key projections (see :func:`align_prompt_attention`); align_memory_attention:
    make memory cross-attention local at the start (see :func:`align_memory_attention`);
    both for training from scratch. batch_size: clips per step over all workers; micro_batch:
    clips per forward and backward (gradients summed; 0: each worker's whole share at once);
    prefetch_steps: steps loaded ahead by a background thread (0: load in the loop).
    """

    steps: int = 1000
    batch_size: int = 4
    clip_len: int = 8
    clip_len_schedule: tuple[tuple[int, int], ...] = ()
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    freeze: tuple[str, ...] = ()
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True  # bfloat16 autocast, on CUDA only
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: bool = True
    micro_batch: int = 0
    prefetch_steps: int = 2
    align_prompt_attention: bool = False
    align_memory_attention: bool = False
    prompts: PromptOptions = field(default_factory=PromptOptions)
    loss: LossWeights = field(default_factory=LossWeights)

    def clip_len_at(self, step: int) -> int:
        length = self.clip_len
        for start, value in sorted(self.clip_len_schedule):
            if step >= start:
                length = value
        return length


def load_tree(spec: str | dict) -> dict:
    """The official-style model tree of an official name, a config file (JSON or YAML; a
    ``resolved``/``model`` wrapper is unwrapped) or a tree given as a dict."""
    if isinstance(spec, dict):
        doc = copy.deepcopy(spec)
    elif spec in OFFICIAL_CONFIG_FILES:
        return official_tree(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"model config not found: {spec} (give an official name or a config file)"
            )
        text = path.read_text()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            doc = yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise ConfigError(f"{spec}: a config must be a mapping at the top level")
    if isinstance(doc.get("resolved"), dict):
        doc = doc["resolved"]
    if isinstance(doc.get("model"), dict) and "image_encoder" not in doc:
        doc = doc["model"]
    return doc


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``steps``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def align_prompt_attention(model: SAM2Model, sharpness: float = 8.0) -> int:
    """Copy each mask-decoder cross-attention's query projection onto its key projection
    (biases zeroed), so that at the start of training a prompt's position encoding already
    attends to image positions with a similar encoding (inner products survive a shared
    random projection; ``sharpness`` scales the keys so that the attention is selective
    from the start rather than nearly uniform). Returns how many attentions were changed. An initialisation for
    training from scratch only: a trained model's decoder is left alone unless asked."""
    count = 0
    with torch.no_grad():
        for name, module in model.sam_mask_decoder.transformer.named_modules():
            if "cross_attn" not in name and "final_attn" not in name:
                continue
            q, k = getattr(module, "q_proj", None), getattr(module, "k_proj", None)
            if q is None or k is None or q.weight.shape != k.weight.shape:
                continue
            k.weight.copy_(q.weight * sharpness)
            k.bias.zero_()
            q.bias.zero_()
            count += 1
    return count


def align_memory_attention(model: SAM2Model, strength: float = 5.0, pairs: int = 3) -> int:
    """Give each memory cross-attention equal query and key biases that live on the rotary
    channel pairs of the ``pairs`` highest frequencies (x and y). Rotary encoding then makes
    the attention local from the start: a position attends mostly to memories at and near
    the same position, so the memory of the object's mask is read where it was. Without it
    a tiny model trained from scratch attends uniformly and learns to ignore its memory.
    Returns how many attentions were changed. For training from scratch only."""
    count = 0
    with torch.no_grad():
        for layer in model.memory_attention.layers:
            attn = layer.cross_attn_image
            head = attn.internal_dim // attn.num_heads
            quarter = head // 4
            bias = torch.zeros(attn.internal_dim)
            for h in range(attn.num_heads):
                for j in range(min(pairs, quarter)):
                    bias[h * head + 2 * j] = strength  # x rotation, frequency j
                    bias[h * head + 2 * (quarter + j)] = strength  # y rotation, frequency j
            attn.q_proj.bias.copy_(bias)
            attn.k_proj.bias.copy_(bias)
            count += 1
    return count


def frozen_names(model: torch.nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Parameter names matched by any of ``prefixes`` (each must match at least one)."""
    names = [n for n, _ in model.named_parameters()]
    matched = []
    for prefix in prefixes:
        hit = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hit:
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(
                f"--freeze {prefix!r} matches no parameter; top-level modules: {', '.join(tops)}"
            )
        matched += hit
    return sorted(set(matched))


@dataclass
class StepStats:
    step: int
    loss: float
    terms: dict[str, float]
    lr: float
    clips_per_s: float
    clip_len: int
    objects: int
    clips: int = 0
    seconds: float = 0.0


class Trainer:
    """Trains ``model`` on clips from ``source``; writes into ``output`` (see the module docstring)."""

    def __init__(
        self,
        model: SAM2Model,
        tree: dict,
        source: ClipSource,
        output: str | Path,
        config: TrainConfig,
        extra_record: dict | None = None,
        replicas: Replicas | None = None,
    ):
        self.replicas = replicas or Replicas()
        per_worker = config.batch_size // self.replicas.world_size
        self.plan = BatchPlan(
            config.batch_size,
            config.micro_batch or per_worker,
            self.replicas.rank,
            self.replicas.world_size,
        )
        self.model = model.to(config.device)
        if config.align_prompt_attention:
            align_prompt_attention(self.model)
        if config.align_memory_attention:
            align_memory_attention(self.model)
        self.tree = tree
        self.source = source
        self.output = Path(output)
        self.config = config
        self.extra_record = dict(extra_record or {})
        self.step = 0
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.frozen = frozen_names(self.model, tuple(config.freeze))
        frozen = set(self.frozen)
        params = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in frozen)
            if name not in frozen:
                params.append((name, p))
        if not params:
            raise ValueError("every parameter is frozen; nothing to train")
        decay = [p for n, p in params if p.ndim >= 2 and "pos_embed" not in n]
        no_decay = [p for n, p in params if not (p.ndim >= 2 and "pos_embed" not in n)]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, config.steps, config.warmup_steps, config.min_lr_ratio),
        )
        self.forward = ClipForward(self.model, config.prompts)
        self.elapsed = 0.0

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        dev = torch.device(self.config.device)
        if self.config.autocast and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        import contextlib

        return contextlib.nullcontext()

    def batches_for(self, step: int) -> StepBatches:
        """This worker's micro-batches of step ``step`` (see :mod:`.loader`)."""
        clip_len = self.config.clip_len_at(step)
        return step_batches(
            self.source, self.plan, self.config.seed, step, clip_len, self.model.image_size
        )

    def train_step(self, batch: ClipBatch | StepBatches | None = None) -> StepStats:
        """One optimisation step on ``batch`` (default: this step's batches from the source).

        The loss of every micro-batch is normalised by the object count of the whole global
        batch, so summing gradients over micro-batches and workers gives the gradient of the
        global batch's loss."""
        cfg = self.config
        start = time.perf_counter()
        if batch is None:
            batch = self.batches_for(self.step)
        chunks = [(0, batch)] if isinstance(batch, ClipBatch) else batch.chunks
        self.model.train()
        dev = torch.device(cfg.device)
        local_objects = sum(b.num_objects for _, b in chunks)
        objects = self.replicas.sum_(torch.tensor([float(local_objects)], device=dev))
        n = max(float(objects.item()), 1.0)
        names = ("mask", "dice", "iou", "object_score", "embedding")
        logged = torch.zeros(len(names) + 1, device=dev)  # the terms, then the loss
        self.optimizer.zero_grad(set_to_none=True)
        for chunk, part_batch in chunks:
            part_batch = part_batch.to(self.model.device)  # once: the losses read the masks there
            with self._autocast():
                steps = self.forward(part_batch, prompt_rng(cfg.seed, self.step, chunk))
            terms = {"mask": 0.0, "dice": 0.0, "iou": 0.0, "object_score": 0.0}
            for out in steps:
                if not out.supervised:
                    continue
                target = part_batch.masks[:, out.frame]
                part = step_losses(
                    out.multimasks.float(),
                    out.ious.float(),
                    out.object_logits.float(),
                    target,
                    cfg.loss,
                )
                terms = {k: terms[k] + part[k] for k in terms}
            terms = {k: v / n for k, v in terms.items()}
            terms["embedding"] = (
                embedding_penalty(self.forward.last_embedding) / self.plan.num_chunks
            )
            loss = total_loss(terms, cfg.loss)
            loss.backward()
            logged += torch.stack(
                [torch.as_tensor(terms[k], dtype=torch.float32, device=dev).detach() for k in names]
                + [loss.detach().float()]
            )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.replicas.sum_gradients(trainable)
        self.replicas.sum_(logged)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        took = time.perf_counter() - start
        self.elapsed += took
        values = logged.tolist()
        clips = sum(b.num_clips for _, b in chunks) * self.replicas.world_size
        return StepStats(
            step=self.step,
            loss=values[-1],
            terms=dict(zip(names, values[:-1])),
            lr=lr,
            clips_per_s=clips / max(took, 1e-9),
            clip_len=chunks[0][1].num_frames,
            objects=int(n),
            clips=clips,
            seconds=took,
        )

    # ------------------------------------------------------------------ loop

    def train(
        self,
        on_log: Callable[[StepStats], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
    ) -> None:
        """Run until ``config.steps``, logging and checkpointing as configured. With several
        replicas, only the main one writes files; the callbacks run on every replica."""
        cfg = self.config
        main = self.replicas.is_main
        if main:
            self.output.mkdir(parents=True, exist_ok=True)
        window: list[StepStats] = []
        if cfg.prefetch_steps > 0:
            loader = BackgroundBatches(self.batches_for, self.step, cfg.steps, cfg.prefetch_steps)
        else:
            loader = None
        batches = iter(loader) if loader is not None else None
        try:
            while self.step < cfg.steps:
                stats = self.train_step(next(batches) if batches is not None else None)
                window.append(stats)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    mean = _mean_stats(window)
                    window = []
                    if main:
                        with open(self.output / LOG_FILE, "a") as f:
                            f.write(
                                json.dumps(asdict(mean) | {"elapsed_s": round(self.elapsed, 1)})
                                + "\n"
                            )
                    if on_log:
                        on_log(mean)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    path = self.save() if main else self.output / MODEL_FILE
                    if on_checkpoint:
                        on_checkpoint(self.step, path)
        finally:
            if loader is not None:
                loader.close()

    # ------------------------------------------------------------------ checkpoints

    def training_record(self) -> dict:
        cfg = asdict(self.config)
        return {
            "step": self.step,
            "elapsed_s": round(self.elapsed, 1),
            "config": cfg,
            **self.extra_record,
        }

    def save(self) -> Path:
        """Write model.pt (official format), config.json, train_state.pt, and a per-step copy."""
        self.output.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        model_path = self.output / MODEL_FILE
        _atomic_save({"model": state}, model_path)
        if self.config.keep_checkpoints:
            (self.output / "checkpoints").mkdir(exist_ok=True)
            _atomic_save({"model": state}, self.output / "checkpoints" / f"step_{self.step:06d}.pt")
        doc = {"resolved": self.tree, "training": self.training_record()}
        tmp = self.output / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(self.output / CONFIG_FILE)
        _atomic_save(
            {
                "step": self.step,
                "elapsed_s": self.elapsed,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                # every CUDA device's generator too, so that a resumed run on CUDA draws the same numbers
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "frozen": self.frozen,
            },
            self.output / STATE_FILE,
        )
        return model_path

    def resume(self) -> None:
        """Continue from the files in ``output`` (model, optimizer, scheduler, step, random state)."""
        state_path = self.output / STATE_FILE
        model_path = self.output / MODEL_FILE
        for p in (state_path, model_path):
            if not p.is_file():
                raise FileNotFoundError(f"cannot resume: {p} not found")
        load_checkpoint(self.model, str(model_path))
        state = read_train_state(state_path)
        if list(state.get("frozen", [])) != self.frozen:
            raise ValueError(
                f"cannot resume: {state_path} was trained with frozen {state.get('frozen')}, now {self.frozen}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        cuda_rng = list(state.get("cuda_rng", []))  # absent in files written before it was saved
        if cuda_rng and torch.cuda.is_available():
            for device, rng_state in enumerate(cuda_rng[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(rng_state, device)


def _mean_stats(window: list[StepStats]) -> StepStats:
    last = window[-1]
    return StepStats(
        step=last.step,
        loss=float(np.mean([s.loss for s in window])),
        terms={k: float(np.mean([s.terms[k] for s in window])) for k in last.terms},
        lr=last.lr,
        clips_per_s=sum(s.clips for s in window) / max(sum(s.seconds for s in window), 1e-9),
        clip_len=last.clip_len,
        objects=int(round(np.mean([s.objects for s in window]))),
        clips=sum(s.clips for s in window),
        seconds=sum(s.seconds for s in window),
    )


def build_for_training(spec: str | dict, checkpoint: str | None = None) -> tuple[SAM2Model, dict]:
    """A model (random weights, or ``checkpoint`` loaded strictly) and its tree, for training."""
    tree = load_tree(spec)
    cfg = config_from_tree(tree, name=spec if isinstance(spec, str) else "custom")
    model = SAM2Model(cfg)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model, tree
