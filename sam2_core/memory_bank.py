"""Per-object memories of one video, and how a frame is conditioned on them.

A :class:`MemoryBank` stores, for every object, what the model left behind on
the frames it saw: the outputs of its conditioning frames (frames with
prompts) and of the frames it was tracked on, each with its encoded memory and
its object pointer. To condition a frame it picks each object's memories by
the memory rule (:func:`~sam2_core.memory_rule.select_memory`), turns them into
memory tokens with their position and temporal encodings, and runs the
model's memory attention for all objects as one batch (objects with fewer
memories padded and masked). :meth:`MemoryBank.forget` drops what the rule
will never ask for again (:func:`~sam2_core.memory_rule.retention`), so a
streaming pass holds a bounded state.

The video tracker and training's clip forward both go through it, so
tracking and training assemble memory the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .memory_rule import Keep, retention, select_memory
from .modeling.sam2 import HeadsOutput, ImageFeatures, SAM2Model
from .transfer import host_values, to_device


@dataclass
class FrameState:
    """What tracking one object on one frame leaves behind.

    pred_masks: 1 x 1 x h4 x w4 low-res logits (None when not kept, or once no longer needed);
    obj_ptr: 1 x C; object_score_logits: 1 x 1; iou: 1; maskmem: 1 x mem x h x w memory
    features (None until encoded, or once out of the memory window).
    """

    pred_masks: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    iou: torch.Tensor
    maskmem: torch.Tensor | None = None

    def nbytes(self) -> int:
        tensors = (self.pred_masks, self.obj_ptr, self.object_score_logits, self.iou, self.maskmem)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class ObjectMemory:
    """One object's stored outputs: ``cond`` on its conditioning frames, ``non_cond`` on the
    frames it was tracked on. A frame is in one of them at most (conditioning wins)."""

    cond: dict[int, FrameState] = field(default_factory=dict)
    non_cond: dict[int, FrameState] = field(default_factory=dict)

    def output(self, frame: int) -> FrameState | None:
        return self.cond.get(frame) or self.non_cond.get(frame)

    def referred(self, frame: int, conditioning: bool) -> FrameState:
        """The stored output a selected memory refers to (see ``MemorySelection``)."""
        if conditioning:
            return self.cond[frame]
        return self.non_cond.get(frame) or self.cond[frame]


@dataclass
class MemoryTokens:
    """What a batch of B objects attends to on one frame.

    tokens, pos: B x M x mem_dim (spatial memories first, then object pointers, each pointer
    split into ``hidden_dim / mem_dim`` tokens); num_pointer_tokens: how many of the M are
    pointers (the same count for every object, padding included); key_mask: B x M, True for
    real tokens, or None when no object needs padding.
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    num_pointer_tokens: int
    key_mask: torch.Tensor | None


class MemoryBank:
    """The memories of every object of one video.

    num_frames: the video's (or clip's) length, for the memory rule. storage_device: where
    stored outputs live (None: the model's device; "cpu" offloads them). memory_dtype: dtype
    of stored memory features (float32 for parity; bfloat16 halves them). pointer_span: the
    video length the object pointers' temporal encoding assumes (default ``num_frames``; at
    most ``max_obj_ptrs_in_encoder``). stable_shapes: pad every object's memory to a fixed
    token count (``num_maskmem`` spatial memories and ``max_obj_ptrs_in_encoder`` pointers, or
    the next multiple of them) and always pass the key mask, so that a compiled memory attention
    sees the same shapes on every frame of every video. Stored tensors keep their autograd
    history, so training can backpropagate through the memory path. Copies between storage
    and the model's device never wait for the device (:mod:`sam2_core.transfer`).
    """

    def __init__(
        self,
        model: SAM2Model,
        num_frames: int,
        storage_device: str | torch.device | None = None,
        memory_dtype: torch.dtype = torch.float32,
        pointer_span: int | None = None,
        stable_shapes: bool = False,
    ):
        cfg = model.cfg.tracking
        if not cfg.directly_add_no_mem_embed:
            raise ValueError("models with directly_add_no_mem_embed=false are not supported")
        self.model, self.cfg, self.num_frames = model, cfg, num_frames
        self.device = model.device
        self.storage = torch.device(storage_device) if storage_device else self.device
        self.memory_dtype = memory_dtype
        self.stable_shapes = stable_shapes
        self.pointer_span = min(pointer_span or num_frames, cfg.max_obj_ptrs_in_encoder)
        self._objects: dict[int, ObjectMemory] = {}
        self._memory_pos: torch.Tensor | None = None

    # ------------------------------------------------------------------ storing

    def memory(self, object_id: int) -> ObjectMemory:
        """The object's memory (created empty on first use)."""
        return self._objects.setdefault(object_id, ObjectMemory())

    def remove(self, object_id: int) -> None:
        self._objects.pop(object_id, None)

    def clear(self) -> None:
        self._objects.clear()

    def output(self, object_id: int, frame: int) -> FrameState | None:
        """The object's stored output on the frame, if any."""
        mem = self._objects.get(object_id)
        return None if mem is None else mem.output(frame)

    def records(
        self,
        heads: HeadsOutput,
        maskmem: torch.Tensor | None = None,
        outputs: torch.Tensor | None = None,
    ) -> list[FrameState]:
        """One record per object of a batch's outputs, moved to storage: pointers, scores and
        IoUs as float32, ``maskmem`` (B x mem x h x w) in the memory dtype; ``outputs``:
        B x 1 x h4 x w4 mask logits to keep with them (None: none kept)."""
        sto = self.storage
        return [
            FrameState(
                pred_masks=None if outputs is None else to_device(outputs[i : i + 1], sto),
                obj_ptr=to_device(heads.obj_ptr[i : i + 1].float(), sto),
                object_score_logits=to_device(heads.object_score_logits[i : i + 1].float(), sto),
                iou=to_device(heads.iou[i : i + 1].float(), sto),
                maskmem=None if maskmem is None else self.stored_memory(maskmem[i : i + 1]),
            )
            for i in range(heads.obj_ptr.shape[0])
        ]

    def stored_memory(self, maskmem: torch.Tensor) -> torch.Tensor:
        """Memory features as they are stored (storage device, memory dtype)."""
        return to_device(maskmem, self.storage, self.memory_dtype)

    def add(
        self,
        object_ids: Sequence[int],
        frame: int,
        states: Sequence[FrameState],
        conditioning: bool,
    ) -> None:
        """File each object's output on ``frame`` as a conditioning or an ordinary frame. An
        ordinary output on one of the object's conditioning frames is not kept."""
        for oid, state in zip(object_ids, states, strict=True):
            mem = self.memory(oid)
            if conditioning:
                mem.cond[frame] = state
                mem.non_cond.pop(frame, None)
            elif frame not in mem.cond:
                mem.non_cond[frame] = state

    def demote(self, object_id: int, frame: int) -> bool:
        """Make the object's conditioning output on ``frame`` an ordinary one; False if none."""
        mem = self.memory(object_id)
        state = mem.cond.pop(frame, None)
        if state is not None:
            mem.non_cond[frame] = state
        return state is not None

    # ------------------------------------------------------------------ reading

    def without_memory(self, feats: ImageFeatures) -> torch.Tensor:
        """Features of a frame seen with no memory (an object's first conditioning frame)."""
        return self.model.add_no_memory(feats.embedding)

    def condition(
        self, object_ids: Sequence[int], frame: int, feats: ImageFeatures, reverse: bool
    ) -> torch.Tensor:
        """Memory-conditioned features of ``frame`` for each object: B x C x h x w.

        feats: the frame's features with batch 1 (shared by all B objects; the memory
        attention's first self-attention then runs once) or batch B. ``reverse``: the
        direction of travel, for the memory rule.
        """
        mem = self.tokens(object_ids, frame, feats, reverse)
        return self.model.condition_on_memory(
            feats, mem.tokens, mem.pos, mem.num_pointer_tokens, mem.key_mask
        )

    def tokens(
        self, object_ids: Sequence[int], frame: int, feats: ImageFeatures, reverse: bool
    ) -> MemoryTokens:
        """The memory tokens each object attends to on ``frame``, as the memory rule selects them."""
        model, cfg = self.model, self.cfg
        mem_dim, hidden = model.cfg.mem_dim, model.cfg.hidden_dim
        split = hidden // mem_dim if mem_dim < hidden else 1
        pos = self._position(feats).flatten(2).transpose(1, 2)  # 1 x hw x mem
        hw = pos.shape[1]

        spatial, spatial_pos, ptrs, ptr_pos = [], [], [], []
        for oid in object_ids:
            mem = self._objects.get(oid)
            if mem is None or not mem.cond:
                raise ValueError(f"object {oid} has no prompts: add points, a box or a mask first")
            sel = select_memory(
                frame,
                list(mem.cond),
                lambda t, m=mem: t in m.non_cond,
                self.num_frames,
                reverse,
                cfg,
            )
            feats_i, pos_i = [], []
            for t, slot, from_cond in sel.spatial:
                state = mem.referred(t, from_cond)
                if state.maskmem is None:
                    raise RuntimeError(
                        f"memory of frame {t} for object {oid} was dropped but is still needed"
                    )
                feats_i.append(
                    to_device(state.maskmem, self.device, torch.float32).flatten(2).transpose(1, 2)
                )
                pos_i.append(
                    pos + model.maskmem_tpos_enc[cfg.num_maskmem - slot - 1].reshape(1, 1, mem_dim)
                )
            spatial.append(feats_i)
            spatial_pos.append(pos_i)
            ptrs.append(
                [
                    to_device(mem.referred(t, c).obj_ptr, self.device, torch.float32)
                    for t, _, c in sel.pointers
                ]
            )
            ptr_pos.append([d for _, d, _ in sel.pointers])

        b = len(object_ids)
        n_sp = max(len(s) for s in spatial)
        n_pt = max(len(p) for p in ptrs)
        ragged = any(len(s) != n_sp for s in spatial) or any(len(p) != n_pt for p in ptrs)
        if self.stable_shapes:
            n_sp = _round_up(n_sp, cfg.num_maskmem)
            n_pt = (
                _round_up(n_pt, cfg.max_obj_ptrs_in_encoder)
                if cfg.use_obj_ptrs_in_encoder
                else n_pt
            )
            ragged = True
        tokens = feats.embedding.new_zeros(b, n_sp * hw + n_pt * split, mem_dim)
        tokens_pos = torch.zeros_like(tokens)
        key_mask = (
            torch.zeros(b, tokens.shape[1], dtype=torch.bool, device=self.device)
            if ragged
            else None
        )
        # Every object's pointer positions in one upload (B x n_pt), not one per object.
        if n_pt:
            rel = host_values([p + [0] * (n_pt - len(p)) for p in ptr_pos], self.device)
        for i in range(b):
            if spatial[i]:
                k = len(spatial[i]) * hw
                tokens[i, :k] = torch.cat(spatial[i], dim=1)[0]
                tokens_pos[i, :k] = torch.cat(spatial_pos[i], dim=1)[0]
                if key_mask is not None:
                    key_mask[i, :k] = True
            if ptrs[i]:
                n = len(ptrs[i])
                start = n_sp * hw
                tokens[i, start : start + n * split] = torch.cat(ptrs[i], dim=0).reshape(
                    n * split, mem_dim
                )
                tokens_pos[i, start : start + n * split] = model.pointer_position_encoding(
                    rel[i, :n], self.pointer_span
                ).repeat_interleave(split, dim=0)
                if key_mask is not None:
                    key_mask[i, start : start + n * split] = True
        return MemoryTokens(tokens, tokens_pos, n_pt * split, key_mask)

    def _position(self, feats: ImageFeatures) -> torch.Tensor:
        """Position encoding of a memory (the same for every frame): 1 x mem x h x w."""
        if self._memory_pos is None:
            h, w = feats.embedding.shape[-2:]
            probe = torch.zeros(1, self.model.cfg.mem_dim, h, w, device=self.device)
            self._memory_pos = self.model.memory_encoder.position_encoding(probe)
        return self._memory_pos

    # ------------------------------------------------------------------ forgetting

    def forget(self, current: int, reverse: bool, reverse_from: int | None = None) -> None:
        """Drop from every object's ordinary outputs what a pass now at ``current`` will never
        read again (``memory_rule.retention``; ``reverse_from``: where a reverse pass still to
        come starts). Conditioning outputs are always kept."""
        for mem in self._objects.values():
            for t in list(mem.non_cond):
                keep = retention(t, current, reverse, self.cfg, reverse_from)
                if keep is Keep.NOTHING:
                    del mem.non_cond[t]
                elif keep is Keep.POINTER:
                    mem.non_cond[t].maskmem = None
                    mem.non_cond[t].pred_masks = None

    def holds(self, object_id: int, frame: int) -> bool:
        """Whether an output of the object on the frame is stored."""
        return self.output(object_id, frame) is not None

    def stored_frames(self) -> int:
        """Number of (object, frame) outputs held."""
        return sum(len(m.cond) + len(m.non_cond) for m in self._objects.values())

    def stored_bytes(self) -> int:
        """Bytes held in stored outputs."""
        return sum(
            s.nbytes()
            for m in self._objects.values()
            for s in [*m.cond.values(), *m.non_cond.values()]
        )


def _round_up(n: int, step: int) -> int:
    """The smallest multiple of ``step`` that is at least ``max(n, 1)``."""
    step = max(step, 1)
    return max(-(-n // step), 1) * step
