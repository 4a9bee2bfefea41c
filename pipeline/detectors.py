"""Open-vocabulary detectors (Hugging Face transformers) whose boxes start objects.

``jobs label --detector owlv2|grounding-dino --text "person, dog"``: on the keyframes of every
video line without objects, the detector looks for the named categories and each box it finds
that no tracked object covers becomes a new object's box prompt (:mod:`sam2_core.proposals`,
:mod:`pipeline.masklets`). :class:`DetectorSpec` is what a run asks for (hashed into unit ids,
sent to every worker); :func:`load_detector` builds one from a hub name or a local folder
written by ``save_pretrained``, once per worker. transformers is the optional ``detect`` extra,
imported only here and only when a detector is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.storage import has_protocol, safe_uri, url_to_fs
from sam2_core.proposals import Detection as Detection  # re-exported: the detection record

DEFAULT_WEIGHTS = {
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "grounding-dino": "IDEA-Research/grounding-dino-tiny",
}
DETECTORS = tuple(DEFAULT_WEIGHTS)
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "owner/name"
DEFAULT_THRESHOLDS = {"owlv2": 0.2, "grounding-dino": 0.35}
"""Boxes scoring below are dropped: 0.2 for OWLv2 (its own examples use 0.1-0.3), 0.35 for
Grounding DINO (its authors' box threshold)."""


@dataclass(frozen=True)
class DetectorSpec:
    """A detector run: its kind (one of :data:`DETECTORS`), the categories it looks for, its
    weights (a hub name or a local path) and the score a box needs to count."""

    kind: str
    labels: tuple[str, ...]
    weights: str
    threshold: float

    def record(self) -> dict:
        """Plain JSON values, hashed into a unit id."""
        return {**dataclasses.asdict(self), "labels": list(self.labels)}

    def describe(self) -> str:
        labels = ", ".join(self.labels) or "categories per line"
        return f"{self.kind} {safe_uri(self.weights)} ({labels}; threshold {self.threshold:g})"


def parse_labels(text: str) -> tuple[str, ...]:
    """``"person, dog"`` -> ("person", "dog"); blanks and repeats dropped, order kept."""
    labels = [part.strip() for part in text.split(",")]
    return tuple(dict.fromkeys(label for label in labels if label))


def detector_spec(
    kind: str | None,
    text: str | None,
    weights: str | None = None,
    threshold: float | None = None,
) -> DetectorSpec | None:
    """The run's detector from its command-line options, or None without one. Without
    ``text`` its categories are empty: every video line using it must name its own (a line's
    ``text``; :func:`pipeline.plan.detector_category_rejects`). Raises ValueError (one line,
    naming the option) for an unknown kind, ``--text`` without a detector, a text naming no
    category, a threshold outside [0, 1], or weights that are neither an existing local folder
    nor a hub name."""
    if kind is None:
        for name, value in (("--text", text), ("--detector-weights", weights)):
            if value is not None:
                raise ValueError(f"{name} needs --detector ({' or '.join(DETECTORS)})")
        if threshold is not None:
            raise ValueError("--detection-threshold needs --detector")
        return None
    if kind not in DETECTORS:
        raise ValueError(f"--detector {kind!r} is not one of {', '.join(DETECTORS)}")
    labels = () if text is None else parse_labels(text)
    if text is not None and not labels:
        raise ValueError(
            f"--text {text!r} names no category: give the categories to look for, e.g. --text "
            '"person, dog"'
        )
    threshold = DEFAULT_THRESHOLDS[kind] if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--detection-threshold must be in [0, 1], got {threshold:g}")
    if (
        weights is not None
        and not has_protocol(weights)
        and not os.path.exists(weights)
        and not _HUB_NAME.fullmatch(weights)
    ):
        raise ValueError(
            f"--detector-weights {weights!r}: no such local folder, not a folder URL "
            "(s3://...), and not a hub name (owner/name)"
        )
    return DetectorSpec(kind, labels, weights or DEFAULT_WEIGHTS[kind], threshold)


class Detector(Protocol):
    """Boxes of the named categories on one frame (H x W x 3 uint8 RGB), in pixels."""

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]: ...


def load_detector(kind: str, weights: str, device: str = "cpu", threshold: float = 0.0):
    """The detector ``kind`` with ``weights`` (hub name or local folder) on ``device``,
    keeping boxes scoring above ``threshold``. Raises ImportError naming the extra when
    transformers is missing, ValueError for an unknown kind."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r} (known: {', '.join(DETECTORS)})")
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "--detector needs Hugging Face transformers: pip install '.[detect]'"
        ) from error
    if kind == "owlv2":
        model = transformers.Owlv2ForObjectDetection.from_pretrained(weights)
        detector = _Owlv2(model, transformers.Owlv2Processor.from_pretrained(weights))
    else:
        model = transformers.GroundingDinoForObjectDetection.from_pretrained(weights)
        detector = _GroundingDino(
            model, transformers.GroundingDinoProcessor.from_pretrained(weights)
        )
    detector.model.to(device).eval()
    detector.device, detector.threshold = device, threshold
    return detector


def load_spec(spec: DetectorSpec, device: str = "cpu", storage_options: dict | None = None):
    """:func:`load_detector` for a run's :class:`DetectorSpec`. Weights at a folder URL
    (``s3://bucket/owlv2/``, read with ``storage_options``) are copied to a temporary folder
    and loaded from there. Local or URL weights that do not load are the input's fault
    (InputError naming the location without credentials: the run stops, no worker retries
    them); a hub name that does not load may be the network's (the error as raised)."""
    from pipeline.errors import InputError

    if has_protocol(spec.weights):
        with tempfile.TemporaryDirectory(prefix="detector-weights-") as folder:
            try:
                fs, path = url_to_fs(spec.weights, storage_options)
                if not fs.isdir(path):
                    raise FileNotFoundError("no such folder")
                fs.get(path.rstrip("/") + "/", folder + "/", recursive=True)
                return load_detector(spec.kind, folder, device, spec.threshold)
            except OSError as error:
                raise InputError(
                    f"cannot load {spec.kind} weights from {safe_uri(spec.weights)}: "
                    f"{type(error).__name__}: {safe_uri(str(error))}"
                ) from None
    try:
        return load_detector(spec.kind, spec.weights, device, spec.threshold)
    except OSError as error:
        if not os.path.exists(spec.weights):
            raise
        raise InputError(f"cannot load {spec.kind} weights from {spec.weights}: {error}") from None


class _Owlv2:
    """OWLv2: one score per (image patch, category); boxes relative to the square the
    processor pads the frame to (bottom and right), so scaled by its longer side."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.device, self.threshold = "cpu", 0.0

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        import torch

        labels = list(labels)
        inputs = self.processor(text=[labels], images=image, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**inputs.to(self.device))
        side = max(image.shape[:2])
        (result,) = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(side, side)]
        )
        return [
            Detection(tuple(float(v) for v in box), float(score), labels[int(label)])
            for box, score, label in zip(
                result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()
            )
        ]


class _GroundingDino:
    """Grounding DINO: scores per (query, text token); a box's category is the label whose
    tokens score highest, its score that label's best token."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.device, self.threshold = "cpu", 0.0

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        import torch

        labels = list(labels)
        text, spans = _prompt_text(labels)
        inputs = self.processor(images=image, text=text, return_tensors="pt")
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        with torch.inference_mode():
            outputs = self.model(**inputs.to(self.device))
        probs = outputs.logits[0].sigmoid().float().cpu()  # queries x text positions
        columns = [
            [t for t, (a, b) in enumerate(offsets) if b > a and start <= a and b <= end]
            for start, end in spans
        ]
        per_label = torch.stack(
            [probs[:, c].max(dim=1).values if c else torch.zeros(len(probs)) for c in columns],
            dim=1,
        )
        scores, best = per_label.max(dim=1)
        h, w = image.shape[:2]
        cx, cy, bw, bh = outputs.pred_boxes[0].float().cpu().unbind(-1)
        boxes = torch.stack(
            [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1
        )
        return [
            Detection(
                tuple(float(v) for v in boxes[q].tolist()), float(scores[q]), labels[int(best[q])]
            )
            for q in range(len(scores))
            if scores[q] > self.threshold
        ]


def _prompt_text(labels: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's text ("person. dog.", lower case) and each label's character span."""
    text, spans = "", []
    for label in labels:
        spans.append((len(text), len(text) + len(label)))
        text += label.lower() + ". "
    return text.rstrip(), spans
