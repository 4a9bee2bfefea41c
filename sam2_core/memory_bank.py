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
from .modeling.common import KeptWhileUnchanged
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

    tokens: B x M x mem_dim (spatial memories first, then object pointers, each pointer split
    into ``hidden_dim / mem_dim`` tokens); pos: their encodings, B x M x mem_dim, or
    1 x M x mem_dim when every object's are the same (they broadcast); num_pointer_tokens: how many of the M are
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
        self._slot_pos = KeptWhileUnchanged()

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
        if maskmem is not None:
            maskmem = self.stored_memory(maskmem)  # the whole batch in one copy
        return [
            FrameState(
                pred_masks=None if outputs is None else to_device(outputs[i : i + 1], sto),
                obj_ptr=to_device(heads.obj_ptr[i : i + 1].float(), sto),
                object_score_logits=to_device(heads.object_score_logits[i : i + 1].float(), sto),
                iou=to_device(heads.iou[i : i + 1].float(), sto),
                maskmem=None if maskmem is None else maskmem[i : i + 1],
            )
            for i in range(heads.obj_ptr.shape[0])
        ]

    def stored_memory(self, maskmem: torch.Tensor) -> torch.Tensor:
        """Memory features as they are stored (storage device, memory dtype, channels-last: each
        image's features are then already its hw x mem block of memory tokens)."""
        stored = to_device(maskmem, self.storage, self.memory_dtype)
        return stored.contiguous(memory_format=torch.channels_last)

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
        """The memory tokens each object attends to on ``frame``, as the memory rule selects them.

        Built with a fixed number of tensor operations whatever the number of objects and
        memories: every selected memory in one concatenation (stored memories are channels-last,
        so each is already a block of tokens), every pointer in another, the positions of all
        of them from one table of per-slot encodings and one pointer-encoding call; when all
        objects select alike (the usual case) their positions are shared (batch 1).
        """
        model, cfg = self.model, self.cfg
        mem_dim, hidden = model.cfg.mem_dim, model.cfg.hidden_dim
        split = hidden // mem_dim if mem_dim < hidden else 1
        slot_pos = self._slot_positions(feats)  # num_maskmem x hw x mem
        hw = slot_pos.shape[1]

        spatial: list[torch.Tensor] = []  # every object's memories, in order
        pointers: list[torch.Tensor] = []
        slots: list[tuple[int, ...]] = []  # per object: its memories' rows of slot_pos
        rels: list[tuple[int, ...]] = []  # per object: its pointers' temporal positions
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
            for t, _, from_cond in sel.spatial:
                state = mem.referred(t, from_cond)
                if state.maskmem is None:
                    raise RuntimeError(
                        f"memory of frame {t} for object {oid} was dropped but is still needed"
                    )
                spatial.append(state.maskmem)
            pointers.extend(mem.referred(t, c).obj_ptr for t, _, c in sel.pointers)
            slots.append(tuple(cfg.num_maskmem - slot - 1 for _, slot, _ in sel.spatial))
            rels.append(tuple(d for _, d, _ in sel.pointers))

        b = len(object_ids)
        n_sp = max(len(s) for s in slots)
        n_pt = max(len(r) for r in rels)
        ragged = any(len(s) != n_sp for s in slots) or any(len(r) != n_pt for r in rels)
        if self.stable_shapes:
            n_sp = _round_up(n_sp, cfg.num_maskmem)
            n_pt = (
                _round_up(n_pt, cfg.max_obj_ptrs_in_encoder)
                if cfg.use_obj_ptrs_in_encoder
                else n_pt
            )
            ragged = True
        # All memories as tokens, K x hw x mem; all pointers as tokens, P x split x mem.
        mem_tokens = (
            _as_tokens(to_device(torch.cat(spatial), self.device, torch.float32))
            if spatial
            else None
        )
        ptr_tokens = (
            to_device(torch.cat(pointers), self.device, torch.float32).reshape(-1, split, mem_dim)
            if pointers
            else None
        )
        shared = not ragged and len(set(slots)) == 1 and len(set(rels)) == 1
        pos_objects = rels[:1] if shared else rels
        all_rels = [d for r in pos_objects for d in r]
        ptr_pos = (
            model.pointer_position_encoding(
                host_values(all_rels, self.device), self.pointer_span
            ).repeat_interleave(split, dim=0)
            if all_rels
            else None
        )
        if not ragged:
            parts = [] if mem_tokens is None else [mem_tokens.reshape(b, n_sp * hw, mem_dim)]
            if ptr_tokens is not None:
                parts.append(ptr_tokens.reshape(b, n_pt * split, mem_dim))
            tokens = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            pos_parts = [
                slot_pos[list(s)].reshape(1, -1, mem_dim) if s else None
                for s in (slots[:1] if shared else slots)
            ]
            nb = 1 if shared else b
            pos_sp = torch.cat(pos_parts).reshape(nb, n_sp * hw, mem_dim) if n_sp else None
            pos_pt = None if ptr_pos is None else ptr_pos.reshape(nb, n_pt * split, mem_dim)
            pos_list = [p for p in (pos_sp, pos_pt) if p is not None]
            tokens_pos = torch.cat(pos_list, dim=1) if len(pos_list) > 1 else pos_list[0]
            return MemoryTokens(tokens, tokens_pos, n_pt * split, None)

        # Objects with fewer memories or pointers than others: padded, masked out.
        tokens = slot_pos.new_zeros(b, n_sp * hw + n_pt * split, mem_dim)
        tokens_pos = torch.zeros_like(tokens)
        key_mask = torch.zeros(b, tokens.shape[1], dtype=torch.bool, device=self.device)
        k_sp = k_pt = 0
        start = n_sp * hw
        for i in range(b):
            k = len(slots[i])
            if k:
                tokens[i, : k * hw] = mem_tokens[k_sp : k_sp + k].reshape(k * hw, mem_dim)
                tokens_pos[i, : k * hw] = slot_pos[list(slots[i])].reshape(k * hw, mem_dim)
                key_mask[i, : k * hw] = True
                k_sp += k
            n = len(rels[i])
            if n:
                end = start + n * split
                tokens[i, start:end] = ptr_tokens[k_pt : k_pt + n].reshape(n * split, mem_dim)
                tokens_pos[i, start:end] = ptr_pos[k_pt * split : (k_pt + n) * split]
                key_mask[i, start:end] = True
                k_pt += n
        return MemoryTokens(tokens, tokens_pos, n_pt * split, key_mask)

    def _slot_positions(self, feats: ImageFeatures) -> torch.Tensor:
        """Position plus temporal encoding of a spatial memory at each slot: num_maskmem x hw x
        mem (row ``num_maskmem - slot - 1`` for slot ``slot``). Kept while the temporal encodings
        are unchanged and no gradient is recorded; recomputed (with its history) otherwise."""
        tpos = self.model.maskmem_tpos_enc

        def compute() -> torch.Tensor:
            pos = self._position(feats).flatten(2).transpose(1, 2)  # 1 x hw x mem
            return pos + tpos.reshape(tpos.shape[0], 1, -1)

        return self._slot_pos.get((tpos,), compute)

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


def _as_tokens(maskmem: torch.Tensor) -> torch.Tensor:
    """K x mem x h x w memory features -> K x hw x mem tokens (a view when channels-last)."""
    return maskmem.flatten(2).transpose(1, 2)


def _round_up(n: int, step: int) -> int:
    """The smallest multiple of ``step`` that is at least ``max(n, 1)``."""
    step = max(step, 1)
    return max(-(-n // step), 1) * step
