"""Tracking many objects through a video with SAM 2's memory.

A :class:`VideoSession` holds one video's prompts and per-object memory and
reproduces the official ``SAM2VideoPredictor`` call by call (add points, a
box or a mask on any frame, before or after tracking; corrections; removing
objects; propagating forward or in reverse). Unlike the official predictor it
advances all objects of a frame together: the frame is encoded once and every
object that needs tracking goes through memory attention, the mask decoder
and the memory encoder as one batch, with per-object memories padded and
masked. What each object remembers, and how a frame is conditioned on it,
is the :class:`~sam2_core.memory_bank.MemoryBank`'s (shared with training);
the session handles prompts and orchestrates the steps.

The typed records (options, per-frame results) are in :mod:`sam2_core.tracker_records`; the
batch path (:func:`track_video`) is in :mod:`sam2_core.batch_tracking`. Both are re-exported
here.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .batch_tracking import _merge_prompts, track_session, track_video  # noqa: F401
from .encode_ahead import EncoderLane, encode_ahead_wanted, traced_encoder, widen_at
from .frames import FramePrefetcher, FrameSource
from .memory_bank import FrameState, MemoryBank
from .modeling.sam2 import NO_OBJECT_SCORE, HeadsOutput, ImageFeatures, SAM2Model
from .postprocess import fill_small_holes
from .prompts import ObjectPrompt
from .tracker_records import (
    FrameMasks,  # noqa: F401
    FrameResult,
    ObjectTrack,
    TrackerOptions,
    TrackerStats,
    automatic_object_chunk,
)
from .transfer import to_device
from .transforms import to_model_coords


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
        self.cfg = model.cfg.tracking
        stable = self.options.stable_shapes
        self.stable_shapes = bool(model.hot_parts_compiled if stable is None else stable)
        self._bank = MemoryBank(
            model,
            self.num_frames,
            self.options.storage_device,
            self.options.memory_dtype,
            stable_shapes=self.stable_shapes,
        )
        self._objects: OrderedDict[int, ObjectTrack] = OrderedDict()
        self._features: OrderedDict[int, ImageFeatures] = OrderedDict()
        ahead = self.options.prefetch_frames
        if ahead is None:  # read ahead only where the model does not run on the same cores
            ahead = 2 if self.device.type == "cuda" else 0
        self._reader = FramePrefetcher(
            frames,
            model.image_size,
            ahead,
            pin=self.device.type == "cuda",
            resize=self.options.frame_resize,
        )
        self._encode = encoder or model.encode_image
        self._custom_encoder = encoder is not None
        self._lane: EncoderLane | None = None
        self.stats = TrackerStats(object_chunk=self.options.object_chunk)

    # ------------------------------------------------------------------ public API

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def add_points(
        self, frame: int, object_id: int, points, labels, clear_old: bool = True
    ) -> FrameResult:
        """Click ``points`` (N x 2, x/y pixels) with ``labels`` (N; 1 foreground, 0 background)."""
        return self.add_prompt(frame, object_id, points=points, labels=labels, clear_old=clear_old)

    def add_box(self, frame: int, object_id: int, box, points=None, labels=None) -> FrameResult:
        """A box (x1, y1, x2, y2 pixels), optionally with points; replaces the frame's earlier points."""
        return self.add_prompt(
            frame, object_id, points=points, labels=labels, box=box, clear_old=True
        )

    def add_prompt(
        self, frame: int, object_id: int, points=None, labels=None, box=None, clear_old: bool = True
    ) -> FrameResult:
        """Add points and/or a box for an object on a frame (new objects are created on demand)."""
        self._check_frame(frame)
        return self.add(
            ObjectPrompt(object_id, frame, points=points, labels=labels, box=box),
            clear_old=clear_old,
        )

    def add_mask(self, frame: int, object_id: int, mask) -> FrameResult:
        """A binary mask (H x W, the video's size or any size) for an object on a frame."""
        self._check_frame(frame)
        return self.add(ObjectPrompt(object_id, frame, mask=mask))

    @torch.inference_mode()
    def add(self, prompt: ObjectPrompt, clear_old: bool = True) -> FrameResult:
        """Add a checked prompt. A mask replaces the frame's earlier prompts; so do points or a
        box unless ``clear_old`` is False, when points join the frame's earlier points (a box
        must then come first, with clear_old=True)."""
        frame = prompt.frame
        self._check_frame(frame)
        if prompt.mask is not None:
            return self._add_mask(prompt)
        if prompt.box is not None and not clear_old:
            raise ValueError(
                "a box must come first on a frame: add it with clear_old=True (it replaces the frame's earlier points)"
            )
        track = self._track(prompt.object_id)
        earlier_prompt = track.prompts.get(frame)
        if not clear_old and earlier_prompt is not None and earlier_prompt.mask is None:
            prompt = earlier_prompt.with_points_of(prompt)
        track.prompts[frame] = prompt
        prev = None
        earlier = self._output(track, frame)
        if earlier is not None and earlier.pred_masks is not None:
            prev = to_device(earlier.pred_masks, self.device).clamp(-32.0, 32.0)
        return self._prompted_step(
            frame, track, points=self._model_points(prompt), mask=None, prev_logits=prev
        )

    @torch.inference_mode()
    def add_all(self, prompts: Sequence[ObjectPrompt]) -> None:
        """Add many checked prompts, each replacing its frame's earlier prompts (as ``add``).
        Points or boxes on a frame where the object has no output yet are decoded together:
        the objects of such a frame with as many prompt points go through the decoder as one
        batch (the same outputs as adding them one by one: such a frame is decoded without
        memory, each object on its own prompts); the others are added one by one."""
        for prompt in prompts:
            self._check_frame(prompt.frame)
            self._track(prompt.object_id)  # objects in the order given, as with ``add``
        if len({(p.object_id, p.frame) for p in prompts}) < len(prompts):
            for prompt in prompts:  # later prompts replace earlier ones: keep the order
                self.add(prompt)
            return
        groups: dict[tuple[int, int], list[ObjectPrompt]] = {}
        for prompt in prompts:
            track = self._objects[prompt.object_id]
            fresh = (
                prompt.mask is None
                and prompt.frame not in track.tracked
                and self._output(track, prompt.frame) is None
            )
            if fresh:
                n_pts = self._model_points(prompt)[1].shape[1]
                groups.setdefault((prompt.frame, n_pts), []).append(prompt)
            else:
                self.add(prompt)
        for (frame, n_pts), group in groups.items():
            self._prompted_batch(frame, group, n_pts)

    def _prompted_batch(self, frame: int, prompts: list[ObjectPrompt], n_pts: int) -> None:
        """Decode first prompts (points/boxes, ``n_pts`` points each) of several objects on one
        frame in one batch; their outputs are kept pending like ``_prompted_step``'s."""
        feats = self._frame_features(frame)
        points = [self._model_points(p) for p in prompts]
        coords = torch.cat([c for c, _ in points])
        labels = torch.cat([lab for _, lab in points])
        b = len(prompts)
        with self._autocast():
            pix = self._bank.without_memory(feats).expand(b, -1, -1, -1)
            heads = self.model.sam_heads(
                pix,
                feats.expand(b).high_res,
                coords,
                labels,
                None,
                multimask=self.model.use_multimask(True, n_pts),
            )
        for prompt, state in zip(prompts, self._store(heads), strict=True):
            track = self._objects[prompt.object_id]
            track.prompts[frame] = prompt
            track.pending[frame] = (True, state)

    def _add_mask(self, prompt: ObjectPrompt) -> FrameResult:
        m = to_device(torch.from_numpy(prompt.mask.astype(np.float32))[None, None], self.device)
        size = self.model.image_size
        if tuple(m.shape[-2:]) != (size, size):
            m = F.interpolate(
                m, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            m = (m >= 0.5).float()
        track = self._track(prompt.object_id)
        track.prompts[prompt.frame] = prompt
        return self._prompted_step(prompt.frame, track, points=None, mask=m, prev_logits=None)

    def _model_points(self, prompt: ObjectPrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt's box corners (labels 2, 3) then its points, in model-input pixels: 1 x N x 2, 1 x N."""
        if prompt.points is None:
            coords, labels = torch.zeros(1, 0, 2), torch.zeros(1, 0, dtype=torch.int32)
        else:
            coords, labels = torch.tensor(prompt.points)[None], torch.tensor(prompt.labels)[None]
        if prompt.box is not None:
            coords = torch.cat([torch.tensor(prompt.box).reshape(1, 2, 2), coords], dim=1)
            labels = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labels], dim=1)
        coords = to_model_coords(coords, (self.height, self.width), self.model.image_size)
        return to_device(coords, self.device), to_device(labels, self.device)

    def clear_prompts(self, frame: int, object_id: int) -> None:
        """Remove an object's prompts on a frame; a conditioning output there becomes an ordinary one."""
        self._check_frame(frame)
        track = self._existing(object_id)
        track.prompts.pop(frame, None)
        track.pending.pop(frame, None)
        if self._bank.demote(object_id, frame):
            track.tracked.pop(frame, None)

    def remove_object(self, object_id: int) -> None:
        """Forget an object entirely."""
        self._existing(object_id)
        del self._objects[object_id]
        self._bank.remove(object_id)

    def reset(self) -> None:
        """Forget every object and prompt (the video stays open)."""
        self._objects.clear()
        self._bank.clear()

    @torch.inference_mode()
    def propagate(
        self, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        """Track every object from ``start_frame`` (default: the earliest prompted frame) forward,
        or in reverse, for at most ``max_frames`` frames after the start; yields each frame."""
        self._commit_pending()
        if not self._objects:
            raise ValueError("no objects to track: add points, a box or a mask first")
        if start_frame is None:
            start_frame = min(t for oid in self._objects for t in self._bank.memory(oid).cond)
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
        if encode_ahead_wanted(
            self.options.encode_ahead,
            self.device,
            len(self._objects),
            self._custom_encoder,
            self.options.autocast_dtype is not None,
            self.model.training,
            self.model.hot_parts_compiled,
        ):
            own = not self._custom_encoder and self.options.autocast_dtype is None
            self._lane = EncoderLane(
                self._encode_for_lane(traced_encoder(self.model) if own else self._encode),
                widen=widen_at(self.model, len(self._objects)),
            )
        try:
            for frame in order:
                if self._lane is not None:  # encode the next frame while this one is tracked
                    self._reader.passed(frame)
                    upcoming = self._reader.upcoming()
                    if upcoming is not None and upcoming not in self._features:
                        self._lane.start(upcoming)
                yield self._advance(frame, reverse)
        finally:
            if self._lane is not None:
                self.stats.frames_encoded_ahead += self._lane.frames_encoded
                self._lane.close()
                self._lane = None
            self._reader.close()

    def _encode_for_lane(self, encode: Callable[[torch.Tensor], ImageFeatures]):
        """What the encode-ahead lane runs for a frame: read, preprocess, encode (under the
        session's autocast, which is per thread and so entered on the lane)."""
        reader, device = self._reader, self.device

        def run(frame: int) -> ImageFeatures:
            image = to_device(reader.load(frame), device)[None]
            with self._autocast():
                return encode(image)

        return run

    # ------------------------------------------------------------------ bookkeeping for streaming

    def forget(self, current: int, reverse: bool, reverse_from: int | None = None) -> None:
        """Drop what a propagation now at ``current`` will never read again (see
        ``MemoryBank.forget``; ``reverse_from``: where a reverse propagation still to come starts)."""
        self._bank.forget(current, reverse, reverse_from)
        for track in self._objects.values():
            for t in [t for t in track.tracked if not self._bank.holds(track.object_id, t)]:
                del track.tracked[t]

    def stored_frames(self) -> int:
        """Number of (object, frame) states held."""
        return self._bank.stored_frames() + sum(len(tr.pending) for tr in self._objects.values())

    def stored_bytes(self) -> int:
        """Bytes held in per-frame states and cached image features."""
        total = self._bank.stored_bytes()
        total += sum(s.nbytes() for tr in self._objects.values() for _, s in tr.pending.values())
        for feats in self._features.values():
            total += sum(x.numel() * x.element_size() for x in feats.levels + feats.pos)
        return total

    # ------------------------------------------------------------------ internals

    def _check_frame(self, frame: int) -> None:
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame index {frame!r} out of range: the video has {self.num_frames} frames (0..{self.num_frames - 1})"
            )

    def _existing(self, object_id: int) -> ObjectTrack:
        if object_id not in self._objects:
            raise KeyError(f"unknown object id {object_id!r}; known: {self.object_ids}")
        return self._objects[object_id]

    def _track(self, object_id: int) -> ObjectTrack:
        if object_id not in self._objects:
            self._objects[object_id] = ObjectTrack(object_id)
        return self._objects[object_id]

    def _autocast(self):
        dtype = self.options.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _frame_features(self, frame: int) -> ImageFeatures:
        if frame in self._features:
            self._features.move_to_end(frame)
            return self._features[frame]
        feats = self._lane.take(frame) if self._lane is not None else None
        if feats is None:
            image = to_device(self._reader.take(frame), self.device)
            with self._autocast():
                feats = self._encode(image[None])
        self._features[frame] = feats
        while len(self._features) > max(self.options.feature_cache_size, 1):
            self._features.popitem(last=False)
        return feats

    def _output(self, track: ObjectTrack, frame: int) -> FrameState | None:
        """The object's latest output on the frame: from a prompt not yet committed, or stored."""
        if frame in track.pending:
            return track.pending[frame][1]
        return self._bank.output(track.object_id, frame)

    def _prompted_step(
        self,
        frame: int,
        track: ObjectTrack,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask,
        prev_logits,
    ) -> FrameResult:
        """One object's output on a frame from its prompts, kept pending (its memory is encoded
        when the next propagation starts)."""
        init = frame not in track.tracked  # an initial conditioning frame: decoded without memory
        reverse = False if init else track.tracked[frame]
        feats = self._frame_features(frame)
        with self._autocast():
            if mask is not None and self.cfg.use_mask_input_as_output_without_sam:
                heads = self.model.mask_as_output(feats.embedding, feats.high_res, mask)
            else:
                if init:
                    pix = self._bank.without_memory(feats)
                else:
                    pix = self._bank.condition([track.object_id], frame, feats, reverse)
                coords, labels = (None, None) if points is None else points
                n_pts = 0 if labels is None else labels.shape[1]
                heads = self.model.sam_heads(
                    pix,
                    feats.high_res,
                    coords,
                    labels,
                    prev_logits if mask is None else mask,
                    multimask=self.model.use_multimask(init, n_pts),
                )
        is_cond = init or self.cfg.add_all_frames_to_correct_as_cond
        track.pending[frame] = (is_cond, self._store(heads)[0])
        return self._result(frame)

    def _store(self, heads: HeadsOutput, maskmem: torch.Tensor | None = None) -> list[FrameState]:
        """What to keep of a batch's outputs, one state per object."""
        low = heads.low_res.float()
        if self.cfg.fill_hole_area > 0:
            # As the official predictor: outputs (not the memory just encoded) get small holes filled.
            low = fill_small_holes(low, self.cfg.fill_hole_area)
        return self._bank.records(heads, maskmem, low)

    def _commit_pending(self) -> None:
        """Encode memories of prompted outputs and file them as conditioning (or ordinary) frames,
        as the official predictor does before each propagation; the memories of all objects
        prompted on a frame are encoded as one batch."""
        for track in self._objects.values():
            memory = self._bank.memory(track.object_id)
            if not track.pending and not memory.cond and not memory.non_cond:
                raise ValueError(
                    f"object {track.object_id} has no prompts: add points, a box or a mask first"
                )
        by_frame: dict[int, list[FrameState]] = {}
        for track in self._objects.values():
            for frame, (_, state) in track.pending.items():
                if state.maskmem is None:
                    by_frame.setdefault(frame, []).append(state)
        for frame, states in by_frame.items():
            self._encode_prompted_memories(frame, states)
        for track in self._objects.values():
            memory = self._bank.memory(track.object_id)
            for frame in sorted(track.pending, key=lambda f: track.pending[f][0]):  # ordinary first
                is_cond, state = track.pending[frame]
                self._bank.add([track.object_id], frame, [state], conditioning=is_cond)
            track.pending.clear()
            if not memory.cond:
                raise ValueError(
                    f"object {track.object_id} has no conditioning frame: add points, a box or a mask first"
                )

    def _encode_prompted_memories(self, frame: int, states: list[FrameState]) -> None:
        """Fill in ``maskmem`` of prompted outputs on one frame, all objects in one batch."""
        size = self.model.image_size
        feats = self._frame_features(frame)
        low = torch.cat([to_device(s.pred_masks, self.device) for s in states])
        high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        scores = torch.cat([to_device(s.object_score_logits, self.device) for s in states])
        with self._autocast():
            mm, _ = self.model.encode_memory(
                feats.embedding, high, scores, binarize=self.cfg.binarize_mask_from_pts_for_mem_enc
            )
        mm = self._bank.stored_memory(mm)
        for i, state in enumerate(states):
            state.maskmem = mm[i : i + 1]

    def _advance(self, frame: int, reverse: bool) -> FrameResult:
        """Track every object on one frame (reusing conditioning outputs) and record it. A frame
        that runs out of device memory is redone with half the object chunk (redoing is safe:
        a chunk's outputs replace the same frame's outputs)."""
        todo = [oid for oid in self._objects if frame not in self._bank.memory(oid).cond]
        while todo:
            try:
                self._track_objects(todo, frame, reverse)
                break
            except torch.OutOfMemoryError:
                chunk = self._object_chunk()
                if chunk <= 1:
                    raise
                self.stats.object_chunk = max(1, min(chunk, len(todo)) // 2)
                self.stats.oom_retries += 1
                self.stats.oom_chunks.append(self.stats.object_chunk)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        for tr in self._objects.values():
            tr.tracked[frame] = reverse
        return self._result(frame)

    def _object_chunk(self) -> int:
        """The chunk in use: the option, else (until a frame ran out of memory) the automatic
        one, estimated once on CUDA, and on the CPU every object of the session."""
        automatic = self.options.object_chunk is None and not self.stats.oom_retries
        if self.stats.object_chunk is None or (automatic and self.device.type != "cuda"):
            self.stats.object_chunk = automatic_object_chunk(
                self.model, self.device, len(self._objects)
            )
        return self.stats.object_chunk

    def _track_objects(self, object_ids: list[int], frame: int, reverse: bool) -> None:
        chunk = self._object_chunk() if self.options.batch_objects else 1
        groups = [object_ids[i : i + chunk] for i in range(0, len(object_ids), chunk)]
        self.stats.record_frame(min(chunk, len(object_ids)), len(groups))
        for group in groups:
            self._track_batch(group, frame, reverse, chunk)

    def _track_batch(self, object_ids: list[int], frame: int, reverse: bool, chunk: int) -> None:
        feats = self._frame_features(frame)
        n = len(object_ids)
        ids = object_ids
        if self.stable_shapes:  # pad with copies of the last object; their outputs are dropped
            ids = object_ids + object_ids[-1:] * (min(_next_power_of_two(n), max(chunk, n)) - n)
        high_res = feats.expand(len(ids)).high_res
        with self._autocast():
            pix = self._bank.condition(ids, frame, feats, reverse)
            heads = self.model.sam_heads(
                pix, high_res, None, None, None, multimask=self.model.use_multimask(False, 0)
            )
            # The frame's embedding is the same for every object: pass it once, it broadcasts.
            maskmem, _ = self.model.encode_memory(
                feats.embedding, heads.high_res, heads.object_score_logits, binarize=False
            )
        if len(ids) > n:
            heads, maskmem = heads.first(n), maskmem[:n]
        self._bank.add(object_ids, frame, self._store(heads, maskmem), conditioning=False)

    def _result(self, frame: int) -> FrameResult:
        """The frame's outputs for every object, gathered on the device (no copy to the host)."""
        ids = self.object_ids
        h4 = self.model.image_size // 4
        absent_mask = score_absent = iou_absent = None
        lows, scores, ious, prompted = [], [], [], []
        for oid in ids:
            track = self._objects[oid]
            state = self._output(track, frame)
            prompted.append(frame in track.prompted_frames())
            if state is None or state.pred_masks is None:
                if absent_mask is None:
                    absent_mask = torch.full(
                        (1, 1, h4, h4), NO_OBJECT_SCORE, dtype=torch.float32, device=self.device
                    )
                    score_absent = torch.full(
                        (1,), NO_OBJECT_SCORE, dtype=torch.float32, device=self.device
                    )
                    iou_absent = torch.zeros(1, dtype=torch.float32, device=self.device)
                lows.append(absent_mask)
                scores.append(score_absent)
                ious.append(iou_absent)
                continue
            lows.append(to_device(state.pred_masks, self.device, torch.float32))
            scores.append(
                to_device(state.object_score_logits, self.device, torch.float32).reshape(1)
            )
            ious.append(to_device(state.iou, self.device, torch.float32).reshape(1))
        if not ids:
            empty = torch.zeros(0, dtype=torch.float32, device=self.device)
            return FrameResult(
                frame,
                ids,
                empty.reshape(0, 1, h4, h4),
                empty,
                empty,
                prompted,
                (self.height, self.width),
            )
        return FrameResult(
            frame,
            ids,
            torch.cat(lows),
            torch.cat(scores),
            torch.cat(ious),
            prompted,
            (self.height, self.width),
        )


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()
