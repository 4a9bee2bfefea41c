"""An exported model in onnxruntime, with numpy only: :class:`OnnxModel` loads a folder written
by :func:`~sam2_core.onnx.export_onnx`, ``encode``s an image and ``decode``s prompts (padding them
as the manifest says); the numpy helpers it and :class:`~sam2_core.onnx.runtime.OnnxTracker`
share (prompt padding, bilinear upsampling, frame preprocessing).

Re-exported by :mod:`sam2_core.onnx.runtime`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
