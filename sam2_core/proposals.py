"""Where prompt-free discovery looks for new objects: proposals on keyframes.

:func:`sam2_core.discovery.discover_objects` asks a :class:`ProposalSource` which frames are
keyframes and, on each, which objects it proposes there. Each :class:`Proposal` carries the
mask its coverage by already-tracked objects is judged by, and how a new object starts from it:
from that mask (automatic masks) or from a box (a detector's box, decoded to a mask on its
keyframe by the image predictor only to judge coverage). Proposals come in priority order: when
two overlap, the first is kept.

- :class:`AutomaticMasks`: the automatic mask generator on every ``every``-th frame; largest
  mask first (a whole object is kept over its parts), then box and mask bits.
- :class:`BoxProposals`: boxes from any detector, live or precomputed, on the frames it names;
  highest score first, then box and category.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# torch and the model code are imported by the sources when built: Detection alone is
# imported by manifest readers, which need neither.


@dataclass(frozen=True)
class Detection:
    """One detected object on one frame.

    box: (x1, y1, x2, y2) in pixels of the frame; score: the detector's confidence (None when
    not known); category: its class name (None when not known).
    """

    box: tuple[float, float, float, float]
    score: float | None = None
    category: str | None = None

    def order_key(self) -> tuple:
        """Highest score first, then box and category: the same detections in any order give
        the same objects."""
        score = -np.inf if self.score is None else float(self.score)
        return (-score, tuple(float(v) for v in self.box), self.category or "")


@dataclass(frozen=True)
class Proposal:
    """A candidate object on a keyframe.

    mask: H x W bool, what coverage by tracked objects is judged by; box: when set, a new
    object starts from this box prompt (x1, y1, x2, y2 pixels) instead of from ``mask``;
    score, category: the detection's, carried to the object found.
    """

    mask: np.ndarray
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    category: str | None = None


class ProposalSource(Protocol):
    """Keyframes of a video and the objects proposed on each."""

    def keyframes(self, num_frames: int) -> Sequence[int]: ...

    def propose(self, frame_index: int, image: np.ndarray) -> list[Proposal]: ...


class AutomaticMasks:
    """Automatic masks (``settings``: MaskGeneratorSettings) on frame 0 and every ``every``
    frames after; masks under ``min_area`` pixels are ignored."""

    def __init__(self, model, every: int, settings, min_area: int = 16):
        from .mask_generator import MaskGenerator

        self.every = every
        self.min_area = max(min_area, 1)
        self.generator = MaskGenerator(model, settings)

    def keyframes(self, num_frames: int) -> Sequence[int]:
        return range(0, num_frames, self.every)

    def propose(self, frame_index: int, image: np.ndarray) -> list[Proposal]:
        masks = [np.asarray(r.segmentation, dtype=bool) for r in self.generator.generate(image)]
        masks = [m for m in masks if m.sum() >= self.min_area]
        keys = [(-int(m.sum()), mask_box(m), np.packbits(m).tobytes()) for m in masks]
        return [Proposal(masks[k]) for k in sorted(range(len(masks)), key=lambda k: keys[k])]


class BoxProposals:
    """Detections as box proposals on ``keyframes``; ``detect(frame_index, image)`` gives that
    frame's detections (boxes already inside the frame). Each box is decoded to a mask by the
    image predictor (one mask, no multimask choice); a box whose mask comes out empty is judged
    by its own rectangle."""

    def __init__(
        self,
        model,
        keyframes: Sequence[int],
        detect: Callable[[int, np.ndarray], Sequence[Detection]],
    ):
        from .predictor import ImagePredictor

        self._keyframes = sorted(set(int(k) for k in keyframes))
        self.detect = detect
        self.predictor = ImagePredictor(model)

    def keyframes(self, num_frames: int) -> Sequence[int]:
        return [k for k in self._keyframes if k < num_frames]

    def propose(self, frame_index: int, image: np.ndarray) -> list[Proposal]:
        detections = sorted(self.detect(frame_index, image), key=Detection.order_key)
        if not detections:
            return []
        self.predictor.set_image(image)
        boxes = np.array([d.box for d in detections], dtype=np.float32)
        import torch

        with torch.inference_mode():
            masks = self.predictor.predict(box=boxes, multimask_output=False).masks[:, 0]
        masks = masks.cpu().numpy().astype(bool)
        out = []
        for detection, mask in zip(detections, masks):
            if not mask.any():
                mask = box_mask(detection.box, image.shape[0], image.shape[1])
            out.append(Proposal(mask, detection.box, detection.score, detection.category))
        return out


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of a non-empty mask's pixels (inclusive)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """H x W bool: the pixels whose centres lie in ``box`` (at least one pixel)."""
    x1, y1, x2, y2 = box
    cols = (np.arange(width) + 0.5 >= x1) & (np.arange(width) + 0.5 <= x2)
    rows = (np.arange(height) + 0.5 >= y1) & (np.arange(height) + 0.5 <= y2)
    mask = rows[:, None] & cols[None, :]
    if not mask.any():
        cx = min(max(int((x1 + x2) / 2), 0), width - 1)
        cy = min(max(int((y1 + y2) / 2), 0), height - 1)
        mask[cy, cx] = True
    return mask
