"""Tracking many objects through a video with SAM 2's memory.

A :class:`VideoSession` holds one video's prompts and per-object memory and
reproduces the official ``SAM2VideoPredictor`` call by call (add points, a
box or a mask on any frame, before or after tracking; corrections; removing
objects; propagating forward or in reverse). Unlike the official predictor it
advances all objects of a frame together: the frame is encoded once and every
object that needs tracking goes through memory attention, the mask decoder
and the memory encoder as one batch, with per-object memories padded and
masked.

:func:`track_video` is the batch path the pipeline uses: all prompts are
known up front, so it streams frames and drops whatever the memory rule says
no later frame can read, keeping its state bounded whatever the video's
length.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .frames import FrameSource
from .memory_rule import reach, select_memory
from .modeling.sam2 import NO_OBJECT_SCORE, HeadsOutput, ImageFeatures, SAM2Model
from .postprocess import fill_small_holes
from .transforms import to_model_coords, video_frame_to_input


@dataclass(frozen=True)
class TrackerOptions:
    """How a session stores its state and runs the model.

    storage_device: where per-frame memories live (None: the model's device; "cpu" offloads,
    as the official ``offload_state_to_cpu``). memory_dtype: dtype of stored memory features
    (float32 for parity; bfloat16 halves state). batch_objects: advance all objects of a frame
    in one batch (False: one object at a time, for comparison). feature_cache_size: frames whose
    image features are kept. autocast_dtype: e.g. torch.bfloat16 to run under autocast on CUDA.
    prefetch_frames: how many frames ahead of a propagation a background thread reads and
    preprocesses (0: none).
    """

    storage_device: str | None = None
    memory_dtype: torch.dtype = torch.float32
    batch_objects: bool = True
    feature_cache_size: int = 2
    autocast_dtype: torch.dtype | None = None
    prefetch_frames: int = 2


class _Prefetcher:
    """Reads and preprocesses the frames a propagation will ask for next, on one thread.

    The frame source is only touched under ``lock``, so readers need not be thread-safe.
    """

    def __init__(self, frames: FrameSource, size: int, depth: int):
        self.frames, self.size, self.depth = frames, size, depth
        self.lock = threading.Lock()
        self._plan: deque[int] = deque()
        self._pending: dict[int, Future] = {}
        self._pool: ThreadPoolExecutor | None = None

    def load(self, frame: int) -> torch.Tensor:
        with self.lock:
            image = self.frames[frame]
        return video_frame_to_input(image, self.size)

    def upcoming(self) -> int | None:
        """The frame the running propagation will ask for next (None outside a propagation)."""
        return self._plan[0] if self._plan else None

    def plan(self, order: Iterable[int]) -> None:
        self._plan = deque(order)
        self._pending.clear()

    def take(self, frame: int) -> torch.Tensor:
        """The preprocessed frame (3 x S x S): prefetched when it was next in the plan."""
        if self._plan and self._plan[0] == frame:
            self._plan.popleft()
        future = self._pending.pop(frame, None)
        self._top_up()
        return future.result() if future is not None else self.load(frame)

    def _top_up(self) -> None:
        if self.depth <= 0:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-prefetch")
        for frame in list(self._plan)[: self.depth]:
            if frame not in self._pending:
                self._pending[frame] = self._pool.submit(self.load, frame)

    def close(self) -> None:
        self._plan.clear()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@dataclass
class FrameState:
    """What tracking one object on one frame leaves behind.

    pred_masks: 1 x 1 x h4 x w4 low-res logits (None once no longer needed); obj_ptr: 1 x C;
    object_score_logits: 1 x 1; iou: 1; maskmem: 1 x mem x h x w memory features (None until
    encoded, or once out of the memory window).
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
class PointPrompt:
    """Points of one frame in model-input pixels: coords 1 x N x 2, labels 1 x N."""

    coords: torch.Tensor
    labels: torch.Tensor


@dataclass
class ObjectTrack:
    """One object's prompts and memory. ``pending`` holds outputs of prompts added since the
    last propagation (memory not encoded yet); ``tracked`` maps each frame the object has been
    tracked on to the direction it was tracked in (True = reverse)."""

    object_id: int
    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, FrameState] = field(default_factory=dict)
    non_cond: dict[int, FrameState] = field(default_factory=dict)
    pending: dict[int, tuple[bool, FrameState]] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)

    def output(self, frame: int) -> FrameState | None:
        if frame in self.pending:
            return self.pending[frame][1]
        return self.cond.get(frame) or self.non_cond.get(frame)

    def prompted_frames(self) -> set[int]:
        return set(self.points) | set(self.masks)


@dataclass
class FrameResult:
    """All objects' outputs on one frame, at the video's resolution.

    mask_logits: N x H x W float32 (> 0 inside; -1024 where absent); object_score_logits: N
    (> 0: present); ious: N predicted IoU of the returned masks; prompted: N, whether the frame
    has prompts for that object.
    """

    frame_index: int
    object_ids: list[int]
    mask_logits: torch.Tensor
    object_score_logits: torch.Tensor
    ious: torch.Tensor
    prompted: list[bool]


class VideoSession:
    """One video's interactive tracking state. Frame indices run 0..len(frames)-1;
    coordinates are pixels of the original video."""

    def __init__(
        self,
        model: SAM2Model,
        frames: FrameSource,
        options: TrackerOptions | None = None,
        encoder: Callable[[torch.Tensor], ImageFeatures] | None = None,
    ):
        """``encoder``: what encodes a 1 x 3 x S x S frame (default ``model.encode_image``; a
        :class:`~sam2_core.shared_encoder.SharedEncoder` batches frames across sessions)."""
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        self.model = model
        self.frames = frames
        self.options = options or TrackerOptions()
        self.num_frames = len(frames)
        self.height, self.width = int(frames.height), int(frames.width)
        self.device = model.device
        self.storage = torch.device(self.options.storage_device) if self.options.storage_device else self.device
        self.cfg = model.cfg.tracking
        if not self.cfg.directly_add_no_mem_embed:
            raise ValueError("models with directly_add_no_mem_embed=false are not supported")
        self._objects: OrderedDict[int, ObjectTrack] = OrderedDict()
        self._features: OrderedDict[int, ImageFeatures] = OrderedDict()
        self._maskmem_pos: torch.Tensor | None = None
        self._reader = _Prefetcher(frames, model.image_size, self.options.prefetch_frames)
        self._encode = encoder or model.encode_image

    # ------------------------------------------------------------------ public API

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def add_points(self, frame: int, object_id: int, points, labels, clear_old: bool = True) -> FrameResult:
        """Click ``points`` (N x 2, x/y pixels) with ``labels`` (N; 1 foreground, 0 background)."""
        return self.add_prompt(frame, object_id, points=points, labels=labels, clear_old=clear_old)

    def add_box(self, frame: int, object_id: int, box, points=None, labels=None) -> FrameResult:
        """A box (x1, y1, x2, y2 pixels), optionally with points; replaces the frame's earlier points."""
        return self.add_prompt(frame, object_id, points=points, labels=labels, box=box, clear_old=True)

    @torch.inference_mode()
    def add_prompt(self, frame: int, object_id: int, points=None, labels=None, box=None, clear_old: bool = True) -> FrameResult:
        """Add points and/or a box for an object on a frame (new objects are created on demand)."""
        self._check_frame(frame)
        object_id = self._check_object_id(object_id)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together (labels: 1 foreground, 0 background)")
        if points is None and box is None:
            raise ValueError("give points with labels, a box, or both")
        if box is not None and not clear_old:
            raise ValueError("a box must come first on a frame: add it with clear_old=True (it replaces the frame's earlier points)")
        coords, labs = self._parse_points(points, labels)
        if box is not None:
            b = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(-1)
            if b.numel() != 4 or not bool(torch.isfinite(b).all()):
                raise ValueError(f"box must be 4 finite numbers x1, y1, x2, y2; got {box!r}")
            coords = torch.cat([b.reshape(1, 2, 2), coords], dim=1)
            labs = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labs], dim=1)
        coords = to_model_coords(coords, (self.height, self.width), self.model.image_size).to(self.device)
        labs = labs.to(self.device)

        track = self._track(object_id)
        if not clear_old and frame in track.points:
            old = track.points[frame]
            coords = torch.cat([old.coords, coords], dim=1)
            labs = torch.cat([old.labels, labs], dim=1)
        track.points[frame] = PointPrompt(coords, labs)
        track.masks.pop(frame, None)

        init = frame not in track.tracked
        reverse = False if init else track.tracked[frame]
        is_cond = init or self.cfg.add_all_frames_to_correct_as_cond
        prev = None
        earlier = track.output(frame)
        if earlier is not None and earlier.pred_masks is not None:
            prev = earlier.pred_masks.to(self.device).clamp(-32.0, 32.0)
        with self._autocast():
            heads = self._prompted_step(frame, track, init, reverse, points=track.points[frame], mask=None, prev_logits=prev)
        track.pending[frame] = (is_cond, self._store(heads)[0])
        return self._result(frame)

    @torch.inference_mode()
    def add_mask(self, frame: int, object_id: int, mask) -> FrameResult:
        """A binary mask (H x W, the video's size or any size) for an object on a frame."""
        self._check_frame(frame)
        object_id = self._check_object_id(object_id)
        m = torch.as_tensor(np.asarray(mask))
        if m.ndim != 2:
            raise ValueError(f"mask must be a 2-D H x W array, got shape {tuple(m.shape)}")
        m = m.bool().float()[None, None].to(self.device)
        size = self.model.image_size
        if tuple(m.shape[-2:]) != (size, size):
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        track = self._track(object_id)
        track.masks[frame] = m
        track.points.pop(frame, None)
        init = frame not in track.tracked
        reverse = False if init else track.tracked[frame]
        is_cond = init or self.cfg.add_all_frames_to_correct_as_cond
        with self._autocast():
            heads = self._prompted_step(frame, track, init, reverse, points=None, mask=m, prev_logits=None)
        track.pending[frame] = (is_cond, self._store(heads)[0])
        return self._result(frame)

    def clear_prompts(self, frame: int, object_id: int) -> None:
        """Remove an object's prompts on a frame; a conditioning output there becomes an ordinary one."""
        self._check_frame(frame)
        track = self._existing(object_id)
        track.points.pop(frame, None)
        track.masks.pop(frame, None)
        track.pending.pop(frame, None)
        state = track.cond.pop(frame, None)
        if state is not None:
            track.non_cond[frame] = state
            track.tracked.pop(frame, None)

    def remove_object(self, object_id: int) -> None:
        """Forget an object entirely."""
        self._existing(object_id)
        del self._objects[object_id]

    def reset(self) -> None:
        """Forget every object and prompt (the video stays open)."""
        self._objects.clear()

    @torch.inference_mode()
    def propagate(self, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Track every object from ``start_frame`` (default: the earliest prompted frame) forward,
        or in reverse, for at most ``max_frames`` frames after the start; yields each frame."""
        self._commit_pending()
        if not self._objects:
            raise ValueError("no objects to track: add points, a box or a mask first")
        if start_frame is None:
            start_frame = min(t for tr in self._objects.values() for t in tr.cond)
        self._check_frame(start_frame)
        limit = self.num_frames if max_frames is None else int(max_frames)
        if limit < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        if reverse:
            end = max(start_frame - limit, 0)
            order = range(start_frame, end - 1, -1) if start_frame > 0 else range(0)
        else:
            end = min(start_frame + limit, self.num_frames - 1)
            order = range(start_frame, end + 1)
        self._reader.plan(order)
        try:
            for frame in order:
                yield self._advance(frame, reverse)
        finally:
            self._reader.close()

    # ------------------------------------------------------------------ bookkeeping for streaming

    def forget(self, keep) -> None:
        """Drop stored non-conditioning outputs whose frame fails ``keep(frame) -> 'all' | 'pointer' | None``:
        'all' keeps the state, 'pointer' keeps only what object pointers need, None drops it."""
        for track in self._objects.values():
            for t in list(track.non_cond):
                verdict = keep(t)
                if verdict is None:
                    del track.non_cond[t]
                elif verdict == "pointer":
                    s = track.non_cond[t]
                    s.maskmem = None
                    s.pred_masks = None
            for t in list(track.tracked):
                if t not in track.cond and t not in track.non_cond:
                    del track.tracked[t]

    def stored_frames(self) -> int:
        """Number of (object, frame) states held."""
        return sum(len(tr.cond) + len(tr.non_cond) + len(tr.pending) for tr in self._objects.values())

    def stored_bytes(self) -> int:
        """Bytes held in per-frame states and cached image features."""
        total = 0
        for tr in self._objects.values():
            states = list(tr.cond.values()) + list(tr.non_cond.values()) + [s for _, s in tr.pending.values()]
            total += sum(s.nbytes() for s in states)
        for feats in self._features.values():
            total += sum(x.numel() * x.element_size() for x in feats.levels + feats.pos)
        return total

    # ------------------------------------------------------------------ internals

    def _check_frame(self, frame: int) -> None:
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise IndexError(f"frame index {frame!r} out of range: the video has {self.num_frames} frames (0..{self.num_frames - 1})")

    @staticmethod
    def _check_object_id(object_id) -> int:
        if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
            raise ValueError(f"object ids must be integers, got {object_id!r}")
        return int(object_id)

    def _existing(self, object_id: int) -> ObjectTrack:
        if object_id not in self._objects:
            raise KeyError(f"unknown object id {object_id!r}; known: {self.object_ids}")
        return self._objects[object_id]

    def _track(self, object_id: int) -> ObjectTrack:
        if object_id not in self._objects:
            self._objects[object_id] = ObjectTrack(object_id)
        return self._objects[object_id]

    @staticmethod
    def _parse_points(points, labels) -> tuple[torch.Tensor, torch.Tensor]:
        if points is None:
            return torch.zeros(1, 0, 2), torch.zeros(1, 0, dtype=torch.int32)
        pts = np.asarray(points, dtype=np.float32)
        labs = np.asarray(labels)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must be N x 2 (x, y), got shape {pts.shape}")
        if labs.ndim != 1 or labs.shape[0] != pts.shape[0]:
            raise ValueError(f"labels must have one entry per point: {pts.shape[0]} points, labels shape {labs.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite numbers")
        if not np.isin(labs, (0, 1)).all():
            raise ValueError(f"labels must be 0 (background) or 1 (foreground), got {labs.tolist()}")
        return torch.from_numpy(pts)[None], torch.from_numpy(labs.astype(np.int32))[None]

    def _autocast(self):
        dtype = self.options.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _frame_features(self, frame: int) -> ImageFeatures:
        if frame in self._features:
            self._features.move_to_end(frame)
            return self._features[frame]
        image = self._reader.take(frame).to(self.device)
        with self._autocast():
            feats = self._encode(image[None])
        self._cache_features(frame, feats)
        return feats

    def _cache_features(self, frame: int, feats: ImageFeatures) -> None:
        self._features[frame] = feats
        while len(self._features) > max(self.options.feature_cache_size, 1):
            self._features.popitem(last=False)

    def _next_input(self) -> tuple[int, torch.Tensor] | None:
        """During a propagation: the next frame it needs and its model input, when not yet encoded."""
        frame = self._reader.upcoming()
        if frame is None or frame in self._features:
            return None
        return frame, self._reader.take(frame)

    def _use_multimask(self, init: bool, num_points: int) -> bool:
        c = self.cfg
        return c.multimask_output_in_sam and (init or c.multimask_output_for_tracking) and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num

    def _prompted_step(self, frame, track: ObjectTrack, init: bool, reverse: bool, points: PointPrompt | None, mask, prev_logits) -> HeadsOutput:
        """One object's output on a frame from its prompts (no memory encoding yet)."""
        feats = self._frame_features(frame)
        if mask is not None and self.cfg.use_mask_input_as_output_without_sam:
            return self.model.mask_as_output(feats.embedding, feats.high_res, mask)
        if init:
            pix = self.model.add_no_memory(feats.embedding)
        else:
            pix = self._condition([track], frame, feats, reverse)
        mask_in = prev_logits if mask is None else mask
        n_pts = 0 if points is None else points.labels.shape[1]
        return self.model.sam_heads(
            pix, feats.high_res,
            None if points is None else points.coords,
            None if points is None else points.labels,
            mask_in, multimask=self._use_multimask(init, n_pts),
        )

    def _memory_pos(self, feats: ImageFeatures) -> torch.Tensor:
        """Position encoding of a memory (the same for every frame): 1 x mem x h x w."""
        if self._maskmem_pos is None:
            h, w = feats.embedding.shape[-2:]
            probe = torch.zeros(1, self.model.cfg.mem_dim, h, w, device=self.device)
            self._maskmem_pos = self.model.memory_encoder.position_encoding(probe)
        return self._maskmem_pos

    def _condition(self, tracks: Sequence[ObjectTrack], frame: int, feats: ImageFeatures, reverse: bool) -> torch.Tensor:
        """Memory-conditioned features of ``frame`` for each track: B x C x h x w."""
        model, cfg = self.model, self.cfg
        mem_dim, hidden = model.cfg.mem_dim, model.cfg.hidden_dim
        split = hidden // mem_dim if mem_dim < hidden else 1
        max_ptrs = min(self.num_frames, cfg.max_obj_ptrs_in_encoder)
        pos = self._memory_pos(feats).flatten(2).transpose(1, 2)  # 1 x hw x mem
        hw = pos.shape[1]

        spatial, spatial_pos, ptrs, ptr_pos = [], [], [], []
        for track in tracks:
            if not track.cond:
                raise ValueError(f"object {track.object_id} has no prompts: add points, a box or a mask first")
            sel = select_memory(frame, list(track.cond), lambda t, tr=track: t in tr.non_cond, self.num_frames, reverse, cfg)
            feats_i, pos_i = [], []
            for t, slot, from_cond in sel.spatial:
                state = _memory_state(track, t, from_cond)
                if state.maskmem is None:
                    raise RuntimeError(f"memory of frame {t} for object {track.object_id} was dropped but is still needed")
                feats_i.append(state.maskmem.to(self.device, torch.float32).flatten(2).transpose(1, 2))
                pos_i.append(pos + model.maskmem_tpos_enc[cfg.num_maskmem - slot - 1].reshape(1, 1, mem_dim))
            spatial.append(feats_i)
            spatial_pos.append(pos_i)
            ptrs.append([_memory_state(track, t, c).obj_ptr.to(self.device, torch.float32) for t, _, c in sel.pointers])
            ptr_pos.append([d for _, d, _ in sel.pointers])

        b = len(tracks)
        n_sp = max(len(s) for s in spatial)
        n_pt = max(len(p) for p in ptrs)
        ragged = any(len(s) != n_sp for s in spatial) or any(len(p) != n_pt for p in ptrs)
        mem = feats.embedding.new_zeros(b, n_sp * hw + n_pt * split, mem_dim)
        mem_pos = torch.zeros_like(mem)
        key_mask = torch.zeros(b, mem.shape[1], dtype=torch.bool, device=self.device) if ragged else None
        for i in range(b):
            if spatial[i]:
                k = len(spatial[i]) * hw
                mem[i, :k] = torch.cat(spatial[i], dim=1)[0]
                mem_pos[i, :k] = torch.cat(spatial_pos[i], dim=1)[0]
                if key_mask is not None:
                    key_mask[i, :k] = True
            if ptrs[i]:
                n = len(ptrs[i])
                start = n_sp * hw
                tok = torch.cat(ptrs[i], dim=0).reshape(n * split, mem_dim)
                enc = model.pointer_position_encoding(torch.tensor(ptr_pos[i], device=self.device, dtype=torch.float32), max_ptrs)
                mem[i, start : start + n * split] = tok
                mem_pos[i, start : start + n * split] = enc.repeat_interleave(split, dim=0)
                if key_mask is not None:
                    key_mask[i, start : start + n * split] = True
        return model.condition_on_memory(feats, mem, mem_pos, n_pt * split, key_mask)

    def _store(self, heads: HeadsOutput, maskmem: torch.Tensor | None = None) -> list[FrameState]:
        """What to keep of a batch's outputs, one state per object."""
        sto = self.storage
        low = heads.low_res.float()
        if self.cfg.fill_hole_area > 0:
            # As the official predictor: outputs (not the memory just encoded) get small holes filled.
            low = fill_small_holes(low, self.cfg.fill_hole_area)
        return [
            FrameState(
                pred_masks=low[i : i + 1].to(sto),
                obj_ptr=heads.obj_ptr[i : i + 1].float().to(sto),
                object_score_logits=heads.object_score_logits[i : i + 1].float().to(sto),
                iou=heads.iou[i : i + 1].float().to(sto),
                maskmem=None if maskmem is None else maskmem[i : i + 1].to(sto, self.options.memory_dtype),
            )
            for i in range(low.shape[0])
        ]

    def _commit_pending(self) -> None:
        """Encode memories of prompted outputs and file them as conditioning (or ordinary) frames,
        as the official predictor does before each propagation."""
        size = self.model.image_size
        binarize = self.cfg.binarize_mask_from_pts_for_mem_enc
        for track in self._objects.values():
            if not track.pending and not track.cond and not track.non_cond:
                raise ValueError(f"object {track.object_id} has no prompts: add points, a box or a mask first")
            for frame in sorted(track.pending, key=lambda f: track.pending[f][0]):  # ordinary first
                is_cond, state = track.pending[frame]
                if state.maskmem is None:
                    feats = self._frame_features(frame)
                    high = F.interpolate(state.pred_masks.to(self.device), size=(size, size), mode="bilinear", align_corners=False)
                    with self._autocast():
                        mm, _ = self.model.encode_memory(feats.embedding, high, state.object_score_logits.to(self.device), binarize=binarize)
                    state.maskmem = mm.to(self.storage, self.options.memory_dtype)
                (track.cond if is_cond else track.non_cond)[frame] = state
            track.pending.clear()
            if not track.cond:
                raise ValueError(f"object {track.object_id} has no conditioning frame: add points, a box or a mask first")
            for frame in track.cond:
                track.non_cond.pop(frame, None)

    def _advance(self, frame: int, reverse: bool) -> FrameResult:
        """Track every object on one frame (reusing conditioning outputs) and record it."""
        todo = [tr for tr in self._objects.values() if frame not in tr.cond]
        if todo:
            groups = [todo] if self.options.batch_objects else [[tr] for tr in todo]
            for group in groups:
                self._track_batch(group, frame, reverse)
        for tr in self._objects.values():
            tr.tracked[frame] = reverse
        return self._result(frame)

    def _track_batch(self, tracks: list[ObjectTrack], frame: int, reverse: bool) -> None:
        feats = self._frame_features(frame)
        high_res = feats.expand(len(tracks)).high_res
        with self._autocast():
            pix = self._condition(tracks, frame, feats, reverse)
            heads = self.model.sam_heads(pix, high_res, None, None, None, multimask=self._use_multimask(False, 0))
            # The frame's embedding is the same for every object: pass it once, it broadcasts.
            maskmem, _ = self.model.encode_memory(feats.embedding, heads.high_res, heads.object_score_logits, binarize=False)
        for track, state in zip(tracks, self._store(heads, maskmem), strict=True):
            track.non_cond[frame] = state

    def _result(self, frame: int) -> FrameResult:
        ids = self.object_ids
        h4 = self.model.image_size // 4
        low = torch.full((len(ids), 1, h4, h4), NO_OBJECT_SCORE, dtype=torch.float32, device=self.device)
        scores = torch.full((len(ids),), NO_OBJECT_SCORE, dtype=torch.float32)
        ious = torch.zeros(len(ids), dtype=torch.float32)
        prompted = []
        for i, oid in enumerate(ids):
            track = self._objects[oid]
            state = track.output(frame)
            prompted.append(frame in track.prompted_frames())
            if state is None or state.pred_masks is None:
                continue
            low[i] = state.pred_masks[0].to(self.device)
            scores[i] = float(state.object_score_logits.reshape(-1)[0])
            ious[i] = float(state.iou.reshape(-1)[0])
        video = F.interpolate(low, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return FrameResult(frame, ids, video[:, 0].float().cpu(), scores, ious, prompted)


def _memory_state(track: ObjectTrack, frame: int, conditioning: bool) -> FrameState:
    """The stored output a memory refers to (see MemorySelection)."""
    if conditioning:
        return track.cond[frame]
    return track.non_cond.get(frame) or track.cond[frame]


# ---------------------------------------------------------------------- batch path


@dataclass(frozen=True)
class ObjectPrompt:
    """A prompt for one object on one frame: points (N x 2 pixels) with labels, a box
    (x1, y1, x2, y2 pixels), points and a box together, or a mask (H x W bool)."""

    object_id: int
    frame: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


def _merge_prompts(prompts: Sequence[ObjectPrompt], num_frames: int) -> dict[tuple[int, int], dict]:
    """Group prompts by (object, frame), concatenating points; validates each."""
    merged: dict[tuple[int, int], dict] = {}
    for i, p in enumerate(prompts):
        where = f"prompt {i} (object {p.object_id}, frame {p.frame})"
        if not 0 <= int(p.frame) < num_frames:
            raise ValueError(f"{where}: frame {p.frame} is past the video's end ({num_frames} frames)")
        if p.points is None and p.box is None and p.mask is None:
            raise ValueError(f"{where}: needs points with labels, a box or a mask")
        if (p.points is None) != (p.labels is None):
            raise ValueError(f"{where}: points and labels must be given together")
        slot = merged.setdefault((int(p.object_id), int(p.frame)), {"points": [], "labels": [], "box": None, "mask": None})
        if p.mask is not None:
            if slot["mask"] is not None or slot["box"] is not None or slot["points"] or p.points is not None or p.box is not None:
                raise ValueError(f"{where}: a mask prompt cannot be combined with other prompts on the same frame")
            slot["mask"] = p.mask
        if p.box is not None:
            if slot["box"] is not None or slot["mask"] is not None:
                raise ValueError(f"{where}: more than one box (or a box and a mask) on the same frame")
            slot["box"] = p.box
        if p.points is not None:
            if slot["mask"] is not None:
                raise ValueError(f"{where}: a mask prompt cannot be combined with points on the same frame")
            slot["points"].append(np.asarray(p.points, dtype=np.float32).reshape(-1, 2))
            slot["labels"].append(np.asarray(p.labels).reshape(-1))
    return merged


def track_video(
    model: SAM2Model,
    frames: FrameSource,
    prompts: Sequence[ObjectPrompt],
    options: TrackerOptions | None = None,
    bounded: bool = True,
    encoder: Callable[[torch.Tensor], ImageFeatures] | None = None,
) -> Iterator[FrameResult]:
    """Track every prompted object through the whole video, each frame yielded once.

    All prompts are added first (each prompted frame becomes a conditioning frame, as with the
    official predictor when every prompt is given before propagating); then objects are tracked
    forward from the earliest prompted frame to the end, then in reverse down to frame 0.
    With ``bounded`` the session drops every stored frame the memory rule can no longer reach,
    so its state does not grow with the video's length. ``encoder``: see :class:`VideoSession`.
    """
    if not prompts:
        raise ValueError("no prompts given")
    return track_session(VideoSession(model, frames, options, encoder), prompts, bounded)


def track_session(session: VideoSession, prompts: Sequence[ObjectPrompt], bounded: bool = True) -> Iterator[FrameResult]:
    """track_video on a session the caller made (and may inspect while it runs)."""
    merged = _merge_prompts(prompts, session.num_frames)
    if not merged:
        raise ValueError("no prompts given")
    for (oid, frame), p in sorted(merged.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if p["mask"] is not None:
            session.add_mask(frame, oid, p["mask"])
        else:
            pts = np.concatenate(p["points"]) if p["points"] else None
            labs = np.concatenate(p["labels"]) if p["labels"] else None
            session.add_prompt(frame, oid, points=pts, labels=labs, box=p["box"])
    start = min(frame for _, frame in merged)
    spatial, pointers = reach(session.cfg)
    window = max(spatial, pointers)

    def keep_near(current: int, reverse: bool):
        def keep(t: int):
            behind = (t - current) if reverse else (current - t)
            seed = not reverse and start <= t <= start + window  # the reverse pass starts from these
            if seed or 0 <= behind <= spatial:
                return "all"
            if 0 <= behind <= pointers:
                return "pointer"
            return None

        return keep

    for result in session.propagate(start, reverse=False):
        yield result
        if bounded:
            session.forget(keep_near(result.frame_index, reverse=False))
    if start > 0:
        for result in session.propagate(start, reverse=True):
            if result.frame_index != start:
                yield result
            if bounded:
                session.forget(keep_near(result.frame_index, reverse=True))


def track_videos(
    model: SAM2Model,
    videos: Sequence[tuple[FrameSource, Sequence[ObjectPrompt]]],
    options: TrackerOptions | None = None,
    bounded: bool = True,
) -> Iterator[tuple[int, FrameResult]]:
    """:func:`track_video` on several videos at once, in lock-step: each step encodes the next
    frame of every video in one image-encoder batch (for a GPU one video cannot fill).

    Yields (video index, FrameResult); each video's results come in track_video's order.
    """
    sessions = [VideoSession(model, frames, options) for frames, _ in videos]
    streams = {i: track_session(s, prompts, bounded) for i, (s, (_, prompts)) in enumerate(zip(sessions, videos))}
    while streams:
        wanted = [(i, nxt) for i in streams if (nxt := sessions[i]._next_input()) is not None]
        if wanted:
            images = torch.stack([image for _, (_, image) in wanted]).to(model.device)
            with sessions[wanted[0][0]]._autocast(), torch.inference_mode():
                feats = model.encode_image(images)
            for k, (i, (frame, _)) in enumerate(wanted):
                sessions[i]._cache_features(frame, feats.take(k))
        for i in list(streams):
            try:
                yield i, next(streams[i])
            except StopIteration:
                del streams[i]
