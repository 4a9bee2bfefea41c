"""Running exported models in onnxruntime, with numpy only (no torch model involved).

:class:`OnnxModel` loads a folder written by :func:`~sam2_core.onnx.export_onnx`: ``encode`` an
image, ``decode`` prompts (padding them as the manifest says). :class:`OnnxTracker` tracks
objects through a video frame by frame with the SAM 2 graphs, following
:class:`~sam2_core.tracker.VideoSession` (same memory rule, same steps) for point and box
prompts; mask prompts are not supported here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import TrackingConfig
from ..memory_rule import select_memory
from ..modeling.sam2 import NO_OBJECT_SCORE
from ..tracker_records import FrameMasks
from .model import (  # noqa: F401  (re-exported: the runner's public names live here too)
    BOX_LABELS,
    PAD_LABEL,
    DecoderOutputs,
    OnnxModel,
    pad_prompt,
    preprocess_frame,
    upsample_bilinear,
)


@dataclass
class _State:
    """One object's output on one frame: low 1 x 1 x h4 x w4 logits, its pointer (C), score,
    IoU, and its memory (mem x h x w; None until encoded)."""

    low: np.ndarray
    pointer: np.ndarray
    score: float
    iou: float
    memory: np.ndarray | None = None


@dataclass
class _Object:
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cond: dict[int, _State] = field(default_factory=dict)
    non_cond: dict[int, _State] = field(default_factory=dict)
    pending: dict[int, tuple[bool, _State]] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)

    def output(self, frame: int) -> _State | None:
        if frame in self.pending:
            return self.pending[frame][1]
        return self.cond.get(frame) or self.non_cond.get(frame)

    def referred(self, frame: int, conditioning: bool) -> _State:
        if conditioning:
            return self.cond[frame]
        return self.non_cond.get(frame) or self.cond[frame]


@dataclass
class OnnxFrameResult:
    """All objects' outputs on one frame: mask_logits N x H x W (video resolution; -1024 where
    absent), object_score_logits N, ious N; prompted N, whether the frame has prompts for that
    object. :meth:`download` gives the same host record as the PyTorch tracker's."""

    frame_index: int
    object_ids: list[int]
    mask_logits: np.ndarray
    object_score_logits: np.ndarray
    ious: np.ndarray
    prompted: list[bool] = field(default_factory=list)

    def download(self) -> FrameMasks:
        """Thresholded masks and per-object scalars, as ``FrameResult.download`` gives them."""
        return FrameMasks(
            self.frame_index,
            list(self.object_ids),
            self.mask_logits > 0,
            self.object_score_logits > 0,
            self.object_score_logits.astype(np.float32),
            self.ious.astype(np.float32),
            list(self.prompted),
        )


class OnnxTracker:
    """Track objects through a video in onnxruntime alone, prompted by points or boxes.

    The steps and the memory rule are :class:`~sam2_core.tracker.VideoSession`'s: a prompt on
    an untracked frame is decoded without memory and becomes a conditioning frame; memories of
    prompted outputs are encoded when a propagation starts; every other frame is conditioned on
    the object's memories (:func:`~sam2_core.memory_rule.select_memory`), decoded, and encoded
    into a memory. Objects are advanced one at a time (the graphs take one object).
    ``frames``: N x H x W x 3 uint8 (or a sequence of frames).
    """

    def __init__(
        self,
        model: OnnxModel | str | Path,
        frames: np.ndarray | Sequence[np.ndarray],
        feature_cache_size: int = 2,
    ):
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model)
        m = self.model.manifest
        missing = {"memory_attention", "memory_encoder"} - set(m.graphs)
        if m.family != "sam2" or missing or m.tracking is None:
            raise ValueError(
                f"{self.model.folder}: tracking needs a SAM 2 export with its video graphs (missing {sorted(missing) or 'tracking settings'})"
            )
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        self.frames = frames
        self.num_frames = len(frames)
        self.height, self.width = int(frames[0].shape[0]), int(frames[0].shape[1])
        self.cfg = TrackingConfig(**m.tracking)
        self.apply_no_object = m.postprocessing["no_object_score"] is not None
        self.pointer_span = min(self.num_frames, self.cfg.max_obj_ptrs_in_encoder)
        self._objects: OrderedDict[int, _Object] = OrderedDict()
        self._features: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = max(feature_cache_size, 1)

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    # ------------------------------------------------------------------ prompts

    def add_points(
        self, frame: int, object_id: int, points, labels, clear_old: bool = True
    ) -> OnnxFrameResult:
        """Click ``points`` (N x 2 video pixels) with ``labels`` (1 foreground, 0 background)."""
        return self.add_prompt(frame, object_id, points, labels, None, clear_old)

    def add_box(self, frame: int, object_id: int, box, points=None, labels=None) -> OnnxFrameResult:
        """A box (x1, y1, x2, y2 video pixels), optionally with points."""
        return self.add_prompt(frame, object_id, points, labels, box, True)

    def add_prompt(
        self, frame: int, object_id: int, points=None, labels=None, box=None, clear_old: bool = True
    ) -> OnnxFrameResult:
        """Points and/or a box for an object on a frame (the object is created on demand)."""
        self._check_frame(frame)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points with labels, a box, or both")
        coords = (
            np.zeros((0, 2), np.float32)
            if points is None
            else np.asarray(points, np.float32).reshape(-1, 2)
        )
        labs = np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
        if coords.shape[0] != labs.shape[0]:
            raise ValueError(f"{coords.shape[0]} points but {labs.shape[0]} labels")
        if not np.isin(labs, (0, 1)).all():
            raise ValueError(
                f"labels must be 0 (background) or 1 (foreground), got {labs.tolist()}"
            )
        if box is not None:
            box = np.asarray(box, np.float32).reshape(-1)
            if box.size != 4:
                raise ValueError(f"box must be 4 numbers x1, y1, x2, y2; got {box.size}")
            coords = np.concatenate([box.reshape(2, 2), coords])
            labs = np.concatenate([np.array(BOX_LABELS, np.int64), labs])
        if not np.isfinite(coords).all():
            raise ValueError("points and box must be finite numbers")
        size = self.model.manifest.image_size
        coords = coords * np.array([size / self.width, size / self.height], np.float32)
        obj = self._objects.setdefault(int(object_id), _Object())
        if not clear_old and frame in obj.points:
            old_c, old_l = obj.points[frame]
            coords, labs = np.concatenate([old_c, coords]), np.concatenate([old_l, labs])
        obj.points[frame] = (coords, labs)
        earlier = obj.output(frame)
        prev = None if earlier is None else np.clip(earlier.low, -32.0, 32.0)
        init = frame not in obj.tracked
        feats = self._frame_features(frame)
        pix = (
            feats["image_embeddings"]
            if init
            else self._condition(obj, frame, feats, obj.tracked[frame])
        )
        state = self._decode(
            pix, feats, coords[None], labs[None], prev, self._use_multimask(init, len(labs))
        )
        obj.pending[frame] = (init or self.cfg.add_all_frames_to_correct_as_cond, state)
        return self._result(frame)

    # ------------------------------------------------------------------ tracking

    def propagate(
        self, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[OnnxFrameResult]:
        """Track every object from ``start_frame`` (default: the earliest conditioning frame),
        forward or in reverse, for at most ``max_frames`` frames after it; yields each frame."""
        self._commit_pending()
        if not self._objects:
            raise ValueError("no objects to track: add points or a box first")
        if start_frame is None:
            start_frame = min(t for obj in self._objects.values() for t in obj.cond)
        self._check_frame(start_frame)
        limit = self.num_frames if max_frames is None else int(max_frames)
        if reverse:
            order = (
                range(start_frame, max(start_frame - limit, 0) - 1, -1)
                if start_frame > 0
                else range(0)
            )
        else:
            order = range(start_frame, min(start_frame + limit, self.num_frames - 1) + 1)
        for frame in order:
            for obj in self._objects.values():
                if frame not in obj.cond:
                    self._track(obj, frame, reverse)
                obj.tracked[frame] = reverse
            yield self._result(frame)

    def _track(self, obj: _Object, frame: int, reverse: bool) -> None:
        feats = self._frame_features(frame)
        pix = self._condition(obj, frame, feats, reverse)
        state = self._decode(pix, feats, None, None, None, self._use_multimask(False, 0))
        state.memory = self._encode_memory(feats, state, binarize=False)
        if frame not in obj.cond:
            obj.non_cond[frame] = state

    def _commit_pending(self) -> None:
        for oid, obj in self._objects.items():
            for frame in sorted(obj.pending, key=lambda f: obj.pending[f][0]):  # ordinary first
                is_cond, state = obj.pending[frame]
                if state.memory is None:
                    state.memory = self._encode_memory(
                        self._frame_features(frame),
                        state,
                        self.cfg.binarize_mask_from_pts_for_mem_enc,
                    )
                if is_cond:
                    obj.cond[frame] = state
                    obj.non_cond.pop(frame, None)
                elif frame not in obj.cond:
                    obj.non_cond[frame] = state
            obj.pending.clear()
            if not obj.cond:
                raise ValueError(
                    f"object {oid} has no conditioning frame: add points or a box first"
                )

    # ------------------------------------------------------------------ graph calls

    def _use_multimask(self, init: bool, num_points: int) -> bool:
        # SAM2Model.use_multimask's rule, read from the exported tracking settings.
        t = self.cfg
        return (
            t.multimask_output_in_sam
            and (init or t.multimask_output_for_tracking)
            and t.multimask_min_pt_num <= num_points <= t.multimask_max_pt_num
        )

    def _frame_features(self, frame: int) -> dict[str, np.ndarray]:
        if frame in self._features:
            self._features.move_to_end(frame)
            return self._features[frame]
        feats = self.model.encode(
            preprocess_frame(np.asarray(self.frames[frame]), self.model.manifest)
        )
        self._features[frame] = feats
        while len(self._features) > self._cache_size:
            self._features.popitem(last=False)
        return feats

    def _decode(self, pix, feats, coords, labels, mask, multimask: bool) -> _State:
        """SAM 2's heads for one object: the chosen slot, absent objects' logits overwritten."""
        out = self.model.decode(feats, coords, labels, mask, image_embeddings=pix)
        ious = out.iou_predictions[0]
        slot = 1 + int(np.argmax(ious[1:])) if multimask else 0
        score = float(out.object_score_logits[0, 0])
        low = out.low_res_logits[:, slot : slot + 1].copy()
        if self.apply_no_object and score <= 0:
            low[:] = NO_OBJECT_SCORE
        return _State(low, out.object_pointers[0, slot], score, float(ious[slot]))

    def _encode_memory(self, feats, state: _State, binarize: bool) -> np.ndarray:
        out = self.model.run(
            "memory_encoder",
            vision_features=feats["vision_features"],
            mask_logits=state.low.astype(np.float32),
            object_score_logits=np.array([[state.score]], np.float32),
            binarize=np.array([binarize]),
        )
        return out["memory_features"][0]

    def _condition(self, obj: _Object, frame: int, feats, reverse: bool) -> np.ndarray:
        sel = select_memory(
            frame, list(obj.cond), lambda t: t in obj.non_cond, self.num_frames, reverse, self.cfg
        )
        memories, slots = [], []
        for t, slot, from_cond in sel.spatial:
            state = obj.referred(t, from_cond)
            if state.memory is None:
                raise RuntimeError(f"memory of frame {t} is missing")
            memories.append(state.memory)
            slots.append(slot)
        pointers = [obj.referred(t, c).pointer for t, _, c in sel.pointers]
        out = self.model.run(
            "memory_attention",
            vision_features=feats["vision_features"],
            memory_features=np.stack(memories).astype(np.float32),
            memory_slots=np.asarray(slots, np.int64),
            object_pointers=np.stack(pointers).astype(np.float32),
            object_pointer_distances=np.asarray([d for _, d, _ in sel.pointers], np.int64),
            pointer_span=np.asarray(self.pointer_span, np.int64),
        )
        return out["conditioned_features"]

    # ------------------------------------------------------------------ results

    def _check_frame(self, frame: int) -> None:
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame index {frame!r} out of range: the video has {self.num_frames} frames"
            )

    def _result(self, frame: int) -> OnnxFrameResult:
        ids = self.object_ids
        h4 = 4 * self.model.manifest.embedding_size
        low = np.full((len(ids), 1, h4, h4), NO_OBJECT_SCORE, np.float32)
        scores = np.full(len(ids), NO_OBJECT_SCORE, np.float32)
        ious = np.zeros(len(ids), np.float32)
        for i, oid in enumerate(ids):
            state = self._objects[oid].output(frame)
            if state is not None:
                low[i], scores[i], ious[i] = state.low[0], state.score, state.iou
        video = upsample_bilinear(low, (self.height, self.width))[:, 0]
        prompted = [frame in self._objects[oid].points for oid in ids]
        return OnnxFrameResult(frame, ids, video, scores, ious, prompted)
