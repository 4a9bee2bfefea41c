"""Exporting a SAM 2 or SAM 1 model to ONNX graphs plus a JSON manifest that describes them.

``export_onnx(model, dest)`` writes ``image_encoder.onnx`` and ``mask_decoder.onnx`` (and, for
SAM 2, ``memory_attention.onnx`` and ``memory_encoder.onnx``, enough to track a video in
onnxruntime alone: :class:`~sam2_core.onnx.runtime.OnnxTracker`) and ``model.json``: each
graph's inputs and outputs with shapes, how an image becomes the encoder's input, how prompts
are given, and (SAM 2) the tracking settings the memory rule needs.

Graphs are traced with torch's TorchScript exporter (``dynamo=False``), which needs no extra
package; the number of prompts, points, memories and pointers are dynamic axes.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..modeling.sam2 import NO_OBJECT_SCORE, SAM2Model
from ..sam1.model import SAM1Model
from ..transforms import IMAGENET_MEAN, IMAGENET_STD
from .graphs import DecoderGraph, EncoderGraph, MemoryAttentionGraph, MemoryEncoderGraph

MANIFEST_NAME = "model.json"
MANIFEST_FORMAT = "sam2-labeler-onnx/1"
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype (numpy name) and shape (ints, or axis names for
    dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    doc: str = ""


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its file (beside the manifest), inputs and outputs."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    doc: str = ""


@dataclass(frozen=True)
class OnnxManifest:
    """What ``model.json`` holds; see the module docstring."""

    family: str  # "sam2" or "sam1"
    model_name: str
    image_size: int
    embedding_size: int
    graphs: dict[str, GraphSpec]
    preprocessing: dict
    prompts: dict
    postprocessing: dict
    tracking: dict | None = None
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_NAME) -> OnnxManifest:
        """Parse a manifest; ValueError naming ``where`` if it is not one of ours."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"{where}: not an ONNX export manifest (expected format {MANIFEST_FORMAT!r})"
            )
        graphs = {
            name: GraphSpec(
                g["file"],
                tuple(
                    TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t.get("doc", ""))
                    for t in g["inputs"]
                ),
                tuple(
                    TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t.get("doc", ""))
                    for t in g["outputs"]
                ),
                g.get("doc", ""),
            )
            for name, g in doc["graphs"].items()
        }
        return cls(**{**doc, "graphs": graphs})


def _spec(name: str, dtype: str, shape: tuple, doc: str = "") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape), doc)


def _export_graph(
    module: torch.nn.Module, example: tuple, path: Path, spec: GraphSpec, opset: int
) -> None:
    dynamic_axes = {}
    for t in (*spec.inputs, *spec.outputs):
        axes = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if axes:
            dynamic_axes[t.name] = axes
    with warnings.catch_warnings():
        # Tracing warns about every Python-level shape check it freezes; the parity tests are
        # what shows the frozen choices are the right ones for every input the graph accepts.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def _preprocessing(model: SAM2Model | SAM1Model) -> dict:
    size = model.image_size
    if isinstance(model, SAM2Model):
        return {
            "input": f"1 x 3 x {size} x {size} float32, RGB",
            "image": (
                f"stretch to {size} x {size}: pixels / 255, bilinear antialiased resize (the image "
                "predictor) or Pillow bicubic on the uint8 frame first (video frames), then (x - mean) / std"
            ),
            "pixel_scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "resize": "stretch",
        }
    return {
        "input": f"1 x 3 x {size} x {size} float32, RGB",
        "image": (
            f"scale the longer side to {size} (Pillow bilinear on uint8, sides rounded half up), "
            "(x - 255 * mean) / (255 * std) in 0-255 units, zero padding at the bottom and right"
        ),
        "pixel_scale": 1.0,
        "mean": [255 * m for m in IMAGENET_MEAN],
        "std": [255 * s for s in IMAGENET_STD],
        "resize": "longest_side_pad",
    }


def _prompts(model: SAM2Model | SAM1Model) -> dict:
    sam2 = isinstance(model, SAM2Model)
    return {
        "coords": (
            "pixels of the model input: x * S / W, y * S / H (SAM 2 stretches)"
            if sam2
            else "pixels of the model input: x * w' / W, y * h' / H, (h', w') the scaled image (SAM 1 letterboxes)"
        ),
        "labels": {
            "pad": -1,
            "negative": 0,
            "positive": 1,
            "box_top_left": 2,
            "box_bottom_right": 3,
        },
        "box": "two points (x1, y1) label 2 and (x2, y2) label 3, before any clicks",
        "pad_point": "always" if sam2 else "unless_box",
        "pad_point_doc": (
            "append one point (0, 0) with label -1 to every prompt"
            if sam2
            else "append one point (0, 0) with label -1 to prompts that hold no box"
        ),
        "no_points": "give one point (0, 0) with label -1 (then pad as usual)",
        "mask_input": "low_res_logits of an earlier answer (1 x 1 x 4h x 4w) with has_mask_input = 1; zeros and 0 otherwise",
    }


def _postprocessing(model: SAM2Model | SAM1Model) -> dict:
    conv = model.image_convention
    return {
        "mask_slots": "low_res_logits[:, 0]: the single-mask answer (multimask_output=False); [:, 1:4]: the three multimask candidates (pick by iou_predictions)",
        "to_image": (
            "bilinear (align_corners=False) from 4h x 4w to the image's H x W"
            if not conv.letterbox
            else "bilinear to S x S, crop to the scaled image (h' x w'), bilinear to H x W"
        ),
        "mask_threshold": 0.0,
        "low_res_clamp": conv.low_res_clamp,
        "no_object_score": NO_OBJECT_SCORE
        if isinstance(model, SAM2Model) and model.cfg.decoder.pred_obj_scores
        else None,
        "video": (
            "while tracking, an object whose object_score_logits <= 0 has every logit set to no_object_score"
            if isinstance(model, SAM2Model)
            else None
        ),
    }


def _image_graphs(model: SAM2Model | SAM1Model) -> tuple[dict[str, GraphSpec], dict[str, tuple]]:
    sam2 = isinstance(model, SAM2Model)
    s = model.image_size
    h = model.cfg.feat_size if sam2 else model.cfg.embedding_size
    c = model.sam_prompt_encoder.embed_dim
    enc_out = [
        _spec(
            "image_embeddings",
            "float32",
            ("batch", c, h, h),
            "what the decoder reads for a still image (SAM 2: no_mem_embed added)",
        )
    ]
    if sam2:
        enc_out += [
            _spec("high_res_feats_0", "float32", ("batch", c // 8, 4 * h, 4 * h)),
            _spec("high_res_feats_1", "float32", ("batch", c // 4, 2 * h, 2 * h)),
            _spec(
                "vision_features",
                "float32",
                ("batch", c, h, h),
                "the raw frame embedding (memory attention and memory encoder read it)",
            ),
        ]
    encoder = GraphSpec(
        "image_encoder.onnx",
        (_spec("image", "float32", ("batch", 3, s, s)),),
        tuple(enc_out),
        "normalised image -> features",
    )
    dec_in = [
        _spec(
            "image_embeddings",
            "float32",
            ("image_batch", c, h, h),
            "1, or one per prompt (per-object features while tracking)",
        )
    ]
    if sam2:
        dec_in += [
            _spec("high_res_feats_0", "float32", ("image_batch", c // 8, 4 * h, 4 * h)),
            _spec("high_res_feats_1", "float32", ("image_batch", c // 4, 2 * h, 2 * h)),
        ]
    dec_in += [
        _spec(
            "point_coords",
            "float32",
            ("num_prompts", "num_points", 2),
            "model-input pixels, padding appended (see prompts)",
        ),
        _spec("point_labels", "int64", ("num_prompts", "num_points")),
        _spec("mask_input", "float32", ("mask_batch", 1, 4 * h, 4 * h), "1, or one per prompt"),
        _spec("has_mask_input", "float32", (1,), "1: use mask_input; 0: no mask"),
    ]
    dec_out = [
        _spec(
            "low_res_logits",
            "float32",
            ("num_prompts", 4, 4 * h, 4 * h),
            "slot 0 single-mask answer, 1-3 multimask candidates",
        ),
        _spec("iou_predictions", "float32", ("num_prompts", 4)),
    ]
    if sam2:
        dec_out += [
            _spec(
                "object_score_logits", "float32", ("num_prompts", 1), "> 0: the object is present"
            ),
            _spec(
                "object_pointers",
                "float32",
                ("num_prompts", 4, c),
                "the object pointer that goes with each slot (video)",
            ),
        ]
    decoder = GraphSpec(
        "mask_decoder.onnx",
        tuple(dec_in),
        tuple(dec_out),
        "prompts + features -> mask logits, IoU predictions",
    )
    dev = model.device
    enc_example = (torch.zeros(1, 3, s, s, device=dev),)
    dec_example = [torch.zeros(1, c, h, h, device=dev)]
    if sam2:
        dec_example += [
            torch.zeros(1, c // 8, 4 * h, 4 * h, device=dev),
            torch.zeros(1, c // 4, 2 * h, 2 * h, device=dev),
        ]
    dec_example += [
        torch.tensor([[[10.0, 20.0], [30.0, 40.0], [0.0, 0.0]]], device=dev),
        torch.tensor([[1, 0, -1]], dtype=torch.int64, device=dev),
        torch.zeros(1, 1, 4 * h, 4 * h, device=dev),
        torch.ones(1, device=dev),
    ]
    return {"image_encoder": encoder, "mask_decoder": decoder}, {
        "image_encoder": enc_example,
        "mask_decoder": tuple(dec_example),
    }


def _video_graphs(model: SAM2Model) -> tuple[dict[str, GraphSpec], dict[str, tuple]]:
    cfg = model.cfg
    c, mem, h = cfg.hidden_dim, cfg.mem_dim, cfg.feat_size
    attention = GraphSpec(
        "memory_attention.onnx",
        (
            _spec("vision_features", "float32", (1, c, h, h)),
            _spec("memory_features", "float32", ("num_memories", mem, h, h)),
            _spec(
                "memory_slots",
                "int64",
                ("num_memories",),
                "0: conditioning frame; k: k frames behind",
            ),
            _spec("object_pointers", "float32", ("num_pointers", c)),
            _spec("object_pointer_distances", "int64", ("num_pointers",)),
            _spec("pointer_span", "int64", (), "min(num_frames, max_obj_ptrs_in_encoder)"),
        ),
        (
            _spec(
                "conditioned_features",
                "float32",
                (1, c, h, h),
                "decoder image_embeddings for a tracked frame",
            ),
        ),
        "one object's frame features conditioned on its memories",
    )
    encoder = GraphSpec(
        "memory_encoder.onnx",
        (
            _spec("vision_features", "float32", (1, c, h, h)),
            _spec(
                "mask_logits", "float32", (1, 1, 4 * h, 4 * h), "the object's chosen low-res mask"
            ),
            _spec("object_score_logits", "float32", (1, 1)),
            _spec(
                "binarize",
                "bool",
                (1,),
                "True: threshold the mask (prompted frames, when the model binarizes them)",
            ),
        ),
        (_spec("memory_features", "float32", (1, mem, h, h)),),
        "one object's output on a frame -> its memory",
    )
    dev = model.device
    att_example = (
        torch.zeros(1, c, h, h, device=dev),
        torch.zeros(2, mem, h, h, device=dev),
        torch.tensor([0, 1], dtype=torch.int64, device=dev),
        torch.zeros(2, c, device=dev),
        torch.tensor([1, 2], dtype=torch.int64, device=dev),
        torch.tensor(8, dtype=torch.int64, device=dev),
    )
    enc_example = (
        torch.zeros(1, c, h, h, device=dev),
        torch.zeros(1, 1, 4 * h, 4 * h, device=dev),
        torch.ones(1, 1, device=dev),
        torch.ones(1, dtype=torch.bool, device=dev),
    )
    return (
        {"memory_attention": attention, "memory_encoder": encoder},
        {"memory_attention": att_example, "memory_encoder": enc_example},
    )


def export_onnx(
    model: SAM2Model | SAM1Model, dest: str | Path, opset: int = DEFAULT_OPSET, video: bool = True
) -> OnnxManifest:
    """Write the model's ONNX graphs and ``model.json`` into the folder ``dest`` (created).

    ``video``: also the memory attention and memory encoder (SAM 2 only). Returns the manifest.
    """
    if not isinstance(model, (SAM2Model, SAM1Model)):
        raise TypeError(f"expected a SAM2Model or SAM1Model, got {type(model).__name__}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    sam2 = isinstance(model, SAM2Model)
    specs, examples = _image_graphs(model)
    modules: dict[str, torch.nn.Module] = {
        "image_encoder": EncoderGraph(model),
        "mask_decoder": DecoderGraph(model),
    }
    if sam2 and video:
        vspecs, vexamples = _video_graphs(model)
        specs.update(vspecs)
        examples.update(vexamples)
        modules.update(
            memory_attention=MemoryAttentionGraph(model), memory_encoder=MemoryEncoderGraph(model)
        )
    with torch.no_grad():
        for name, spec in specs.items():
            _export_graph(modules[name].eval(), examples[name], dest / spec.file, spec, opset)
    h = specs["image_encoder"].outputs[0].shape[2]
    manifest = OnnxManifest(
        family="sam2" if sam2 else "sam1",
        model_name=model.cfg.name,
        image_size=model.image_size,
        embedding_size=int(h),
        graphs=specs,
        preprocessing=_preprocessing(model),
        prompts=_prompts(model),
        postprocessing=_postprocessing(model),
        tracking=dataclasses.asdict(model.cfg.tracking) if sam2 and video else None,
    )
    (dest / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest
