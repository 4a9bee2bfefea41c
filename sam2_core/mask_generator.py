"""Automatic mask generation ("segment everything") for SAM 2 and SAM 1 models.

A grid of single-point prompts is decoded in batches; masks are kept when the model's predicted
IoU and their stability score are high enough, deduplicated by box NMS (within each crop, then
across crops), optionally cleaned of small holes and islands, and returned as typed records.
The behaviour, settings and defaults are those of Meta's ``SAM2AutomaticMaskGenerator``
(``sam2`` 1.1.0) for SAM 2 models and ``SamAutomaticMaskGenerator`` (``segment-anything`` 1.0)
for SAM 1 models; where the two differ (predicted-IoU threshold, how ``min_mask_region_area``
cleans masks) the model's family picks the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from . import amg_utils as amg
from .modeling.sam2 import SAM2Model
from .predictor import ImagePredictor
from .sam1.model import SAM1Model
from .transforms import as_rgb_array

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
Cleanup = Literal["logits", "masks"]


@dataclass(frozen=True)
class MaskGeneratorSettings:
    """Settings of :class:`MaskGenerator` (Meta's names and meanings).

    points_per_side: grid points per image side (points_per_side**2 prompts; None when
    ``point_grids`` is given); points_per_batch: prompts decoded at once; pred_iou_thresh: keep
    masks whose predicted IoU is above it (None: 0.8 for SAM 2, 0.88 for SAM 1);
    stability_score_thresh: keep masks whose stability score (IoU of the mask cut at
    mask_threshold +- stability_score_offset) is at least it; mask_threshold: logit cutoff;
    box_nms_thresh: box IoU above which a lower-scored mask of the same crop is a duplicate;
    crop_n_layers: extra layers of crops (layer i: (2**i)**2 crops); crop_nms_thresh: box IoU
    for duplicates across crops (masks from smaller crops win); crop_overlap_ratio: crop overlap,
    as a fraction of the short side in layer 1; crop_n_points_downscale_factor: layer i uses
    points_per_side / factor**i points per side; point_grids: explicit grids (N x 2 in [0, 1],
    one per layer) instead of points_per_side; min_mask_region_area: area under which holes
    and islands are cleaned (0: off); cleanup: how -- "logits" (SAM 2: holes and sprinkles of
    at most that many low-res pixels in every decoded mask, before scoring) or "masks" (SAM 1:
    holes and islands of fewer pixels in each final mask, then box NMS again preferring
    untouched masks); None picks the model family's; output_mode: "binary_mask",
    "uncompressed_rle" or "coco_rle" (pycocotools' compressed RLE, counts as text); use_m2m:
    refine every mask once more with its own low-res logits as a mask prompt;
    multimask_output: three masks per point (else one).
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float | None = None
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: tuple[np.ndarray, ...] | None = None
    min_mask_region_area: int = 0
    cleanup: Cleanup | None = None
    output_mode: OutputMode = "binary_mask"
    use_m2m: bool = False
    multimask_output: bool = True

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if self.points_per_side is not None and self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.point_grids is not None:
            if len(self.point_grids) != self.crop_n_layers + 1:
                raise ValueError(
                    f"point_grids has {len(self.point_grids)} grids but crop_n_layers={self.crop_n_layers} "
                    f"needs {self.crop_n_layers + 1} (one per layer)"
                )
            for i, grid in enumerate(self.point_grids):
                if np.ndim(grid) != 2 or np.shape(grid)[1] != 2:
                    raise ValueError(
                        f"point_grids[{i}] has shape {np.shape(grid)}: expected N x 2 in [0, 1]"
                    )
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if self.crop_n_points_downscale_factor < 1:
            raise ValueError(
                f"crop_n_points_downscale_factor must be >= 1, got {self.crop_n_points_downscale_factor}"
            )
        if self.output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(
                f"unknown output_mode {self.output_mode!r}: use binary_mask, uncompressed_rle or coco_rle"
            )
        if self.cleanup not in (None, "logits", "masks"):
            raise ValueError(
                f"unknown cleanup {self.cleanup!r}: use 'logits' (SAM 2) or 'masks' (SAM 1)"
            )
        if self.min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")

    def for_model(self, model: SAM2Model | SAM1Model) -> MaskGeneratorSettings:
        """These settings with the model family's defaults filled in."""
        sam1 = isinstance(model, SAM1Model)
        return replace(
            self,
            pred_iou_thresh=(0.88 if sam1 else 0.8)
            if self.pred_iou_thresh is None
            else self.pred_iou_thresh,
            cleanup=("masks" if sam1 else "logits") if self.cleanup is None else self.cleanup,
        )

    def grids(self) -> list[np.ndarray]:
        """The point grid of each crop layer, normalised to [0, 1]."""
        if self.point_grids is not None:
            return [np.asarray(g, dtype=np.float64) for g in self.point_grids]
        return amg.layer_point_grids(
            self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor
        )


@dataclass
class MaskRecord:
    """One generated mask.

    segmentation: H x W booleans, or an RLE dict ({"size": [H, W], "counts": ...}) per
    output_mode; area: pixels; bbox: (x, y, w, h) of the mask, w/h from its first to last
    pixel; predicted_iou and stability_score: the scores it was kept for; point_coords: the
    prompt [[x, y]] in image pixels; crop_box: (x, y, w, h) of the crop it was found in.
    """

    segmentation: np.ndarray | dict
    area: int
    bbox: list[float]
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]

    def to_dict(self) -> dict:
        """The record as Meta's generators return it (a dict with the same keys)."""
        return asdict(self)


@dataclass
class _Masks:
    """Masks found so far, N of each: masks (N x h x w booleans on the CPU, in the frame of
    ``frame``), boxes (N x 4, image pixels), ious, scores (stability), points (N x 2, image
    pixels), crops (N x 4 crop boxes) and frames (index into the frame list of each mask)."""

    masks: list[torch.Tensor] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    ious: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    crops: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.masks)

    def extend(self, other: _Masks) -> None:
        self.masks.extend(other.masks)
        self.boxes = torch.cat([self.boxes, other.boxes])
        self.ious = torch.cat([self.ious, other.ious])
        self.scores = torch.cat([self.scores, other.scores])
        self.points = torch.cat([self.points, other.points])
        self.crops = torch.cat([self.crops, other.crops])

    def take(self, index: torch.Tensor) -> _Masks:
        idx = index.cpu()
        return _Masks(
            [self.masks[i] for i in idx.tolist()],
            self.boxes[idx],
            self.ious[idx],
            self.scores[idx],
            self.points[idx],
            self.crops[idx],
        )


class MaskGenerator:
    """Segment everything in an image with a SAM 2 or SAM 1 model.

    ``MaskGenerator(model, points_per_side=32, ...)`` takes :class:`MaskGeneratorSettings`'s
    fields as keywords (or ``settings=``); :meth:`generate` returns one :class:`MaskRecord` per
    mask, in the order Meta's generators return them.
    """

    def __init__(
        self,
        model: SAM2Model | SAM1Model,
        settings: MaskGeneratorSettings | None = None,
        **overrides,
    ):
        base = settings or MaskGeneratorSettings()
        if "point_grids" in overrides and overrides["point_grids"] is not None:
            overrides["point_grids"] = tuple(np.asarray(g) for g in overrides["point_grids"])
            overrides.setdefault("points_per_side", None)
        self.settings = replace(base, **overrides).for_model(model)
        s = self.settings
        logits_cleanup = s.min_mask_region_area if s.cleanup == "logits" else 0
        self.predictor = ImagePredictor(
            model, max_hole_area=logits_cleanup, max_sprinkle_area=logits_cleanup
        )
        self._grids = s.grids()

    @property
    def model(self) -> SAM2Model | SAM1Model:
        return self.predictor.model

    @torch.inference_mode()
    def generate(self, image) -> list[MaskRecord]:
        """Masks for one image (H x W x 3 uint8 array or PIL image)."""
        s = self.settings
        arr = as_rgb_array(image)
        image_hw = (arr.shape[0], arr.shape[1])
        crops = amg.crop_layers(image_hw, s.crop_n_layers, s.crop_overlap_ratio)
        found = _Masks()
        for crop in crops:
            found.extend(self._masks_in_crop(arr, crop, image_hw))
        if len(crops) > 1 and len(found):
            # Duplicates across crops: the mask from the smaller crop wins.
            keep = amg.box_nms(found.boxes, 1 / amg.box_area(found.crops), s.crop_nms_thresh)
            found = found.take(keep)
        full = self._uncrop(found, image_hw)
        if s.cleanup == "masks" and s.min_mask_region_area > 0 and len(found):
            found, full = self._remove_small_regions(found, full)
        return self._records(found, full)

    def _masks_in_crop(
        self, image: np.ndarray, crop: amg.Crop, image_hw: tuple[int, int]
    ) -> _Masks:
        """Decode the layer's grid on one crop, filter, and deduplicate within the crop."""
        s = self.settings
        x0, y0, x1, y1 = crop.box
        self.predictor.set_image(image[y0:y1, x0:x1])
        crop_hw = crop.hw
        points = self._grids[crop.layer] * np.array([crop_hw[1], crop_hw[0]], dtype=np.float64)
        found = _Masks()
        for start in range(0, len(points), s.points_per_batch):
            batch = torch.from_numpy(points[start : start + s.points_per_batch])
            found.extend(self._decode_batch(batch, crop, image_hw))
        if not len(found):
            return found
        found = found.take(amg.box_nms(found.boxes, found.ious, s.box_nms_thresh))
        shift = torch.tensor([x0, y0], dtype=found.points.dtype)
        found.points = found.points + shift
        found.boxes = found.boxes + torch.tensor([x0, y0, x0, y0])
        found.crops = torch.tensor([crop.box], dtype=torch.int64).expand(len(found), 4).clone()
        return found

    def _decode_batch(
        self, points: torch.Tensor, crop: amg.Crop, image_hw: tuple[int, int]
    ) -> _Masks:
        """One batch of single-point prompts (N x 2 crop pixels) -> the masks that pass the filters,
        boxes and points still in crop pixels."""
        s = self.settings
        model = self.model
        device = model.device
        crop_hw = crop.hw
        coords = model.image_convention.to_model_coords(
            points.to(device), crop_hw, model.image_size
        )[:, None, :]
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int32, device=device)
        pred = self.predictor.predict_torch(
            coords, labels, multimask_output=s.multimask_output, return_logits=True
        )
        per_point = pred.masks.shape[1]
        logits = pred.masks.flatten(0, 1)
        ious = pred.ious.flatten(0, 1)
        prompt_points = points.repeat_interleave(per_point, dim=0)
        if s.use_m2m:
            logits, ious = self._refine(
                coords.repeat_interleave(per_point, dim=0), pred.low_res_logits.flatten(0, 1)
            )

        keep = torch.ones_like(ious, dtype=torch.bool)
        if s.pred_iou_thresh > 0:
            keep &= ious > s.pred_iou_thresh
        scores = amg.stability_score(logits, s.mask_threshold, s.stability_score_offset)
        if s.stability_score_thresh > 0:
            keep &= scores >= s.stability_score_thresh
        masks = logits[keep] > s.mask_threshold
        boxes = amg.masks_to_boxes(masks)
        at_edge = amg.near_crop_edge(boxes, crop.box, image_hw)
        masks, boxes = masks[~at_edge], boxes[~at_edge]
        kept = keep.nonzero().flatten()[~at_edge].cpu()
        return _Masks(
            list(masks.cpu().unbind(0)),
            boxes.cpu(),
            ious[kept.to(ious.device)].cpu(),
            scores[kept.to(scores.device)].cpu(),
            prompt_points[kept],
            torch.zeros(len(kept), 4, dtype=torch.int64),
        )

    def _refine(
        self, coords: torch.Tensor, low_res: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode each prompt again with its own low-res logits as a mask prompt (one mask each)."""
        step = self.settings.points_per_batch
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int32, device=coords.device)
        masks, ious = [], []
        for start in range(0, coords.shape[0], step):
            part = slice(start, start + step)
            pred = self.predictor.predict_torch(
                coords[part],
                labels[part],
                mask_input=low_res[part, None],
                multimask_output=False,
                return_logits=True,
            )
            masks.append(pred.masks[:, 0])
            ious.append(pred.ious[:, 0])
        return torch.cat(masks), torch.cat(ious)

    @staticmethod
    def _uncrop(found: _Masks, image_hw: tuple[int, int]) -> torch.Tensor:
        """N x H x W masks on the whole image."""
        full = torch.zeros(len(found), *image_hw, dtype=torch.bool)
        for i, (mask, crop) in enumerate(zip(found.masks, found.crops.tolist())):
            x0, y0 = crop[0], crop[1]
            full[i, y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
        return full

    def _remove_small_regions(
        self, found: _Masks, full: torch.Tensor
    ) -> tuple[_Masks, torch.Tensor]:
        """SAM 1's clean-up of the final masks, then box NMS again, keeping untouched masks first."""
        s = self.settings
        cleaned, changed = amg.remove_small_regions(full, s.min_mask_region_area)
        boxes = amg.masks_to_boxes(cleaned)
        keep = amg.box_nms(boxes, (~changed).float(), max(s.box_nms_thresh, s.crop_nms_thresh))
        found.boxes = torch.where(changed[:, None], boxes, found.boxes)
        return found.take(keep), cleaned[keep]

    def _records(self, found: _Masks, full: torch.Tensor) -> list[MaskRecord]:
        mode = self.settings.output_mode
        records = []
        for i in range(len(found)):
            mask = full[i]
            if mode == "coco_rle":
                segmentation = amg.coco_rle(mask.numpy())
            elif mode == "uncompressed_rle":
                segmentation = amg.uncompressed_rle(mask)
            else:
                segmentation = mask.numpy()
            x1, y1, x2, y2 = found.boxes[i].tolist()
            cx0, cy0, cx1, cy1 = found.crops[i].tolist()
            records.append(
                MaskRecord(
                    segmentation=segmentation,
                    area=int(mask.sum()),
                    bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    predicted_iou=float(found.ious[i]),
                    stability_score=float(found.scores[i]),
                    point_coords=[[float(v) for v in found.points[i].tolist()]],
                    crop_box=[float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)],
                )
            )
        return records
