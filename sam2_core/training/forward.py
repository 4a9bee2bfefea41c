"""A differentiable forward pass through a clip, built from SAM2Model's steps.

Frame 0 of every clip is prompted for each object (a click, a box or the
true mask, as a user would give), optionally followed by corrective clicks;
every later frame is tracked through memory by the tracker's own
:class:`~sam2_core.memory_bank.MemoryBank` (the memory rule picks the
memories; with clips no longer than the memory window every earlier frame of
the clip is used), and optionally one later frame receives corrective clicks
and becomes a conditioning frame. Nothing is detached, so gradients flow
through the memory path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..clicks import corrective_click, distance_transform, first_click
from ..memory_bank import MemoryBank
from ..modeling.prompt_encoder import PAD
from ..modeling.sam2 import HeadsOutput, ImageFeatures, SAM2Model
from .clips import ClipBatch


@dataclass(frozen=True)
class PromptOptions:
    """How prompts are simulated.

    box_prob / mask_prob: chance that frame 0 is prompted with a (noisy) box / the true mask
    instead of a click; exact_click_prob: chance that a click is the object's interior-most
    pixel (as the evaluation's robot user), else a random pixel well inside it;
    max_corrections: corrective clicks on frame 0 (0..max, uniformly); correct_later_prob:
    chance that one later frame gets 1..max_corrections clicks; box_noise: box corner jitter
    as a fraction of the box's side; pointer_frames: the video length assumed by the object
    pointers' temporal encoding (the tracker uses min(video length, max_obj_ptrs_in_encoder);
    None: max_obj_ptrs_in_encoder, i.e. videos at least that long).
    """

    box_prob: float = 0.15
    mask_prob: float = 0.05
    exact_click_prob: float = 0.5
    max_corrections: int = 2
    correct_later_prob: float = 0.2
    box_noise: float = 0.1
    pointer_frames: int | None = None


@dataclass
class StepOutput:
    """One prediction step: multimasks N x M x S x S logits, ious N x M, object_logits N x 1,
    on clip frame ``frame``; ``supervised`` is False for outputs copied from a mask prompt."""

    frame: int
    multimasks: torch.Tensor
    ious: torch.Tensor
    object_logits: torch.Tensor
    supervised: bool = True


def _random_interior_click(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    dist = distance_transform(mask)
    ys, xs = np.nonzero(dist >= max(0.5 * float(dist.max()), 1.0))
    if len(ys) == 0:
        ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


def _noisy_box(mask: np.ndarray, rng: np.random.Generator, noise: float) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    w, h = x1 - x0 + 1, y1 - y0 + 1
    jitter = rng.normal(0.0, noise, size=4) * np.array([w, h, w, h])
    box = np.array([x0, y0, x1, y1]) + jitter
    size = mask.shape[0]
    box = np.clip(box, 0, size - 1)
    return [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]


class ClipForward:
    """Runs one batch of clips through the model and returns every prediction step."""

    def __init__(self, model: SAM2Model, options: PromptOptions | None = None):
        self.model = model
        self.options = options or PromptOptions()
        self.cfg = model.cfg.tracking
        self.last_embedding: torch.Tensor | None = None  # image embeddings of the last call

    def __call__(self, batch: ClipBatch, rng: np.random.Generator) -> list[StepOutput]:
        model, opts = self.model, self.options
        dev = model.device
        num_frames = batch.num_frames
        n = batch.num_objects
        gt = batch.masks.to(dev)
        gt_np = batch.masks.cpu().numpy() > 0.5
        images = batch.images.to(dev).flatten(0, 1)
        all_feats = model.encode_image(images)
        self.last_embedding = all_feats.embedding
        rows = batch.clip_index.to(dev) * num_frames

        later = None
        if num_frames > 1 and opts.max_corrections > 0 and rng.random() < opts.correct_later_prob:
            later = int(rng.integers(1, num_frames))

        outputs: list[StepOutput] = []
        bank = MemoryBank(
            model, num_frames, pointer_span=opts.pointer_frames or self.cfg.max_obj_ptrs_in_encoder
        )
        objects = list(range(n))
        for t in range(num_frames):
            feats = all_feats.take(rows + t)
            points = None
            if t == 0:
                kind = rng.random()
                if kind < opts.mask_prob:
                    heads = model.mask_as_output(feats.embedding, feats.high_res, gt[:, 0:1])
                    outputs.append(
                        StepOutput(
                            0,
                            heads.multimasks,
                            heads.ious,
                            heads.object_score_logits,
                            supervised=False,
                        )
                    )
                    n_corr = 0
                    pix = None
                else:
                    pix = bank.without_memory(feats)
                    points = self._initial_points(
                        gt_np[:, 0], rng, box=kind < opts.mask_prob + opts.box_prob
                    )
                    heads = self._decode(pix, feats, points, None, init=True)
                    outputs.append(self._record(0, heads))
                    n_corr = int(rng.integers(0, opts.max_corrections + 1))
                is_cond = True
            else:
                pix = bank.condition(objects, t, feats, reverse=False)
                heads = model.sam_heads(
                    pix, feats.high_res, None, None, None, multimask=model.use_multimask(False, 0)
                )
                outputs.append(self._record(t, heads))
                n_corr = int(rng.integers(1, opts.max_corrections + 1)) if t == later else 0
                is_cond = False
            for _ in range(n_corr):
                points = self._add_correction(points, heads, gt_np[:, t], rng, n)
                heads = self._decode(pix, feats, points, heads.low_res, init=(t == 0))
                outputs.append(self._record(t, heads))
            if n_corr and t > 0 and self.cfg.add_all_frames_to_correct_as_cond:
                is_cond = True
            binarize = self.cfg.binarize_mask_from_pts_for_mem_enc and points is not None
            mem, _ = model.encode_memory(
                feats.embedding, heads.high_res, heads.object_score_logits, binarize=binarize
            )
            bank.add(objects, t, bank.records(heads, mem), conditioning=is_cond)
        return outputs

    # ------------------------------------------------------------------ prompts

    def _initial_points(
        self, masks: np.ndarray, rng: np.random.Generator, box: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One click (or a box) per object on frame 0: coords N x K x 2, labels N x K."""
        coords, labels = [], []
        for m in masks:
            if box:
                b = _noisy_box(m, rng, self.options.box_noise)
                coords.append([[b[0], b[1]], [b[2], b[3]]])
                labels.append([2, 3])
            else:
                if rng.random() < self.options.exact_click_prob:
                    x, y = first_click(m)
                else:
                    x, y = _random_interior_click(m, rng)
                coords.append([[float(x), float(y)]])
                labels.append([1])
        dev = self.model.device
        return torch.tensor(coords, dtype=torch.float32, device=dev), torch.tensor(
            labels, dtype=torch.int32, device=dev
        )

    def _add_correction(
        self, points, heads: HeadsOutput, masks: np.ndarray, rng: np.random.Generator, n: int
    ):
        """Append one corrective click per object (a padding point where the mask is already right)."""
        pred = (heads.high_res[:, 0] > 0).detach().cpu().numpy()
        new_c, new_l = [], []
        for i in range(n):
            click = corrective_click(pred[i], masks[i], rng)
            if click is None:
                new_c.append([0.0, 0.0])
                new_l.append(PAD)
            else:
                new_c.append([float(click[0]), float(click[1])])
                new_l.append(int(click[2]))
        dev = self.model.device
        c = torch.tensor(new_c, dtype=torch.float32, device=dev)[:, None]
        lab = torch.tensor(new_l, dtype=torch.int32, device=dev)[:, None]
        if points is None:
            return c, lab
        return torch.cat([points[0], c], dim=1), torch.cat([points[1], lab], dim=1)

    def _decode(self, pix, feats: ImageFeatures, points, prev_low_res, init: bool) -> HeadsOutput:
        coords, labels = points
        mask_in = None if prev_low_res is None else prev_low_res.clamp(-32.0, 32.0)
        return self.model.sam_heads(
            pix,
            feats.high_res,
            coords,
            labels,
            mask_in,
            multimask=self.model.use_multimask(init, coords.shape[1]),
        )

    def _record(self, t: int, heads: HeadsOutput) -> StepOutput:
        size = self.model.image_size
        high = F.interpolate(
            heads.multimasks.float(), size=(size, size), mode="bilinear", align_corners=False
        )
        return StepOutput(t, high, heads.ious, heads.object_score_logits)
