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
from .export import MANIFEST_NAME, OnnxManifest

try:
    import onnxruntime as ort
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sam2_core.onnx.runtime needs onnxruntime: pip install 'sam2-labeler[onnx]'"
    ) from err

BOX_LABELS = (2, 3)
PAD_LABEL = -1


@dataclass
class DecoderOutputs:
    """The decoder's answer for B prompts: low_res_logits B x 4 x h4 x w4 (slot 0 single-mask,
    1-3 multimask), iou_predictions B x 4; SAM 2: object_score_logits B x 1, object_pointers
    B x 4 x C."""

    low_res_logits: np.ndarray
    iou_predictions: np.ndarray
    object_score_logits: np.ndarray | None = None
    object_pointers: np.ndarray | None = None

    def slots(self, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """(low-res logits, IoUs) as the torch predictor's ``multimask_output`` returns them."""
        if multimask:
            return self.low_res_logits[:, 1:], self.iou_predictions[:, 1:]
        return self.low_res_logits[:, :1], self.iou_predictions[:, :1]


def pad_prompt(
    coords: np.ndarray | None, labels: np.ndarray | None, rule: str, batch: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """B x N x 2 model-input coordinates and B x N labels -> the decoder's padded inputs.

    No points: one padding point per prompt. ``rule`` is the manifest's ``pad_point``:
    "always" (SAM 2) or "unless_box" (SAM 1; prompts holding a box get none).
    """
    if coords is None:
        coords = np.zeros((batch, 1, 2), np.float32)
        labels = np.full((batch, 1), PAD_LABEL, np.int64)
    coords = np.asarray(coords, np.float32)
    labels = np.asarray(labels, np.int64)
    if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
        raise ValueError(
            f"point_coords {coords.shape} and point_labels {labels.shape}: expected B x N x 2 and B x N"
        )
    boxed = np.isin(labels, BOX_LABELS).any(axis=1)
    if rule == "unless_box":
        if boxed.any() and not boxed.all():
            raise ValueError(
                "a batch of SAM 1 prompts must either all hold a box or none (they need different padding)"
            )
        pad = not boxed.any()
    elif rule == "always":
        pad = True
    else:
        raise ValueError(f"unknown pad_point rule {rule!r} in the manifest")
    if pad:
        b = coords.shape[0]
        coords = np.concatenate([coords, np.zeros((b, 1, 2), np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((b, 1), PAD_LABEL, np.int64)], axis=1)
    return coords, labels


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """... x h x w -> ... x H x W, bilinear with half-pixel centres (torch's
    ``interpolate(mode="bilinear", align_corners=False)`` without antialiasing), float32."""
    h, w = x.shape[-2:]
    out_h, out_w = size

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5
        src = np.maximum(src, 0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, wy = axis(h, out_h)
    x0, x1, wx = axis(w, out_w)
    x = x.astype(np.float32)
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def preprocess_frame(frame: np.ndarray, manifest: OnnxManifest) -> np.ndarray:
    """A video frame (H x W x 3 uint8) -> 1 x 3 x S x S encoder input, as the SAM 2 video
    predictor makes it: Pillow bicubic resize of the uint8 frame, / 255, ImageNet mean / std."""
    from PIL import Image

    pre = manifest.preprocessing
    if pre["resize"] != "stretch":
        raise ValueError(
            f"video frames need a SAM 2 export (stretch resize), this one is {manifest.family}"
        )
    size = manifest.image_size
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 frame, got {arr.shape} {arr.dtype}")
    if arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
    x = arr.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class OnnxModel:
    """An exported model's graphs in onnxruntime (sessions opened on first use).

    ``providers``: onnxruntime execution providers (default CPU); ``threads``: intra-op threads
    (None: onnxruntime's default).
    """

    def __init__(
        self, folder: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
    ):
        self.folder = Path(folder)
        path = self.folder / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no ONNX export manifest (write one with `python -m jobs export-onnx`)"
            )
        self.manifest = OnnxManifest.from_json(path.read_text(), str(path))
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def is_sam2(self) -> bool:
        return self.manifest.family == "sam2"

    def session(self, graph: str) -> ort.InferenceSession:
        """The onnxruntime session of one graph of the manifest."""
        if graph not in self._sessions:
            if graph not in self.manifest.graphs:
                raise KeyError(
                    f"{self.folder}: no graph {graph!r} in the export (has {sorted(self.manifest.graphs)})"
                )
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            file = self.folder / self.manifest.graphs[graph].file
            self._sessions[graph] = ort.InferenceSession(
                str(file), options, providers=self.providers
            )
        return self._sessions[graph]

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph on named inputs; returns its outputs by name."""
        spec = self.manifest.graphs[graph]
        outputs = self.session(graph).run(None, inputs)
        return {t.name: value for t, value in zip(spec.outputs, outputs)}

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """B x 3 x S x S normalised input -> the encoder's outputs by name."""
        return self.run("image_encoder", image=np.ascontiguousarray(image, np.float32))

    def decode(
        self,
        features: dict[str, np.ndarray],
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        image_embeddings: np.ndarray | None = None,
    ) -> DecoderOutputs:
        """Decode B prompts on one image. point_coords: B x N x 2 in model-input pixels (not
        padded; boxes as two points labelled 2 and 3); mask_input: 1 or B x 1 x 4h x 4w;
        ``image_embeddings`` replaces the encoder's (memory-conditioned features, video)."""
        batch = 1 if point_coords is None else np.asarray(point_coords).shape[0]
        coords, labels = pad_prompt(
            point_coords, point_labels, self.manifest.prompts["pad_point"], batch
        )
        side = 4 * self.manifest.embedding_size
        inputs = {
            "image_embeddings": features["image_embeddings"]
            if image_embeddings is None
            else image_embeddings
        }
        if self.is_sam2:
            inputs["high_res_feats_0"] = features["high_res_feats_0"]
            inputs["high_res_feats_1"] = features["high_res_feats_1"]
        has_mask = mask_input is not None
        inputs.update(
            point_coords=coords,
            point_labels=labels,
            mask_input=np.asarray(mask_input, np.float32)
            if has_mask
            else np.zeros((1, 1, side, side), np.float32),
            has_mask_input=np.array([1.0 if has_mask else 0.0], np.float32),
        )
        out = self.run("mask_decoder", **inputs)
        return DecoderOutputs(
            out["low_res_logits"],
            out["iou_predictions"],
            out.get("object_score_logits"),
            out.get("object_pointers"),
        )


# ---------------------------------------------------------------------- video


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
    absent), object_score_logits N, ious N."""

    frame_index: int
    object_ids: list[int]
    mask_logits: np.ndarray
    object_score_logits: np.ndarray
    ious: np.ndarray


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
        return OnnxFrameResult(frame, ids, video, scores, ious)
