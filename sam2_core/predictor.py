"""Image prediction: set one image (or a batch), then ask for masks from points, boxes and masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .modeling.sam2 import ImageFeatures, SAM2Model
from .postprocess import region_areas
from .sam1.model import SAM1Model
from .transforms import as_rgb_array, box_to_points


@dataclass
class ImagePrediction:
    """Masks for B prompts (B omitted when the prompt was not batched).

    masks: B x M x H x W, logits or booleans at the image's resolution; ious: B x M predicted
    IoU; low_res_logits: B x M x h x w (pass one back as ``mask_input`` to refine);
    object_score_logits: B x 1 (> 0: the object is judged present).
    """

    masks: torch.Tensor
    ious: torch.Tensor
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in vars(self).items()}


class ImagePredictor:
    """SAM 2 (or SAM 1) on still images. Prompts are in pixels of the original image."""

    def __init__(
        self,
        model: SAM2Model | SAM1Model,
        mask_threshold: float = 0.0,
        max_hole_area: int = 0,
        max_sprinkle_area: int = 0,
    ):
        """max_hole_area / max_sprinkle_area (as Meta's SAM2ImagePredictor): before upsampling,
        fill background regions of the low-res logits (8-connected, <= mask_threshold) of at most
        that many low-res pixels, and erase foreground regions that small; 0 turns each off."""
        self.model = model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self._features: ImageFeatures | None = None
        self._sizes: list[tuple[int, int]] = []

    @torch.inference_mode()
    def set_image(self, image) -> None:
        """Encode one image (H x W x 3 uint8 array or PIL image)."""
        self.set_images([image])

    @torch.inference_mode()
    def set_images(self, images: Sequence) -> None:
        """Encode a batch of images (they may differ in size); address them by ``image_index``."""
        if len(images) == 0:
            raise ValueError("set_images needs at least one image")
        arrays = [as_rgb_array(im) for im in images]
        size = self.model.image_size
        batch = torch.cat(
            [self.model.image_convention.image_to_input(a, size, self.model.device) for a in arrays]
        )
        feats = self.model.encode_image(batch)
        if isinstance(self.model, SAM2Model) and self.model.cfg.tracking.directly_add_no_mem_embed:
            feats.levels[-1] = self.model.add_no_memory(feats.levels[-1])
        self._features = feats
        self._sizes = [(a.shape[0], a.shape[1]) for a in arrays]

    @property
    def features(self) -> ImageFeatures:
        if self._features is None:
            raise RuntimeError("call set_image() before predicting")
        return self._features

    @torch.inference_mode()
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image_index: int = 0,
    ) -> ImagePrediction:
        """Predict masks on image ``image_index`` from prompts in pixels of that image.

        point_coords: N x 2 or B x N x 2 (x, y pixels); point_labels: N or B x N (1 foreground,
        0 background); box: 4 or B x 4 (x1, y1, x2, y2 pixels); mask_input: 1 x h x w or
        B x 1 x h x w low-res logits from an earlier prediction. Leading B dims batch many
        prompts on the same image in one call. Arrays, lists or tensors; checked and converted
        here, then handed to :meth:`predict_torch`.
        """
        orig_hw = self._image_size(image_index)
        coords, labels, points_batched = self._points_input(point_coords, point_labels, orig_hw)
        boxes, boxes_batched = self._boxes_input(box, orig_hw)
        masks, masks_batched = self._masks_input(mask_input)
        pred = self.predict_torch(
            coords, labels, boxes, masks, multimask_output, return_logits, image_index
        )
        if not (points_batched or boxes_batched or masks_batched):
            pred = ImagePrediction(
                *(
                    t[0]
                    for t in (pred.masks, pred.ious, pred.low_res_logits, pred.object_score_logits)
                )
            )
        return pred

    def _points_input(
        self, point_coords, point_labels, orig_hw: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """B x N x 2 model-frame coords and B x N int32 labels (or None), and whether B was given."""
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is None:
            return None, None, False
        coords = torch.as_tensor(
            np.asarray(point_coords), dtype=torch.float32, device=self.model.device
        )
        labels = torch.as_tensor(
            np.asarray(point_labels), dtype=torch.int32, device=self.model.device
        )
        batched = coords.ndim == 3
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise ValueError(
                f"point_coords {tuple(coords.shape)} and point_labels {tuple(labels.shape)} do not match: "
                "expected N x 2 and N, or B x N x 2 and B x N"
            )
        return (
            self.model.image_convention.to_model_coords(coords, orig_hw, self.model.image_size),
            labels,
            batched,
        )

    def _boxes_input(self, box, orig_hw: tuple[int, int]) -> tuple[torch.Tensor | None, bool]:
        """B x 4 model-frame boxes (or None), and whether B was given."""
        if box is None:
            return None, False
        boxes = torch.as_tensor(np.asarray(box), dtype=torch.float32, device=self.model.device)
        if boxes.shape[-1:] != (4,) or boxes.ndim > 2:
            raise ValueError(
                f"box has shape {tuple(boxes.shape)}: expected 4 or B x 4 (x1, y1, x2, y2 pixels)"
            )
        corners = self.model.image_convention.to_model_coords(
            boxes.reshape(-1, 2), orig_hw, self.model.image_size
        )
        return corners.reshape(-1, 4), boxes.ndim == 2

    def _masks_input(self, mask_input) -> tuple[torch.Tensor | None, bool]:
        """B x 1 x 4h x 4w mask logits (or None), and whether B was given."""
        if mask_input is None:
            return None, False
        masks = torch.as_tensor(
            np.asarray(mask_input), dtype=torch.float32, device=self.model.device
        )
        h, w = self.model.sam_prompt_encoder.mask_input_size
        if masks.ndim not in (3, 4) or masks.shape[-3:] != (1, h, w):
            raise ValueError(
                f"mask_input has shape {tuple(masks.shape)}: expected 1 x {h} x {w} or B x 1 x {h} x {w} "
                "(low_res_logits of an earlier prediction)"
            )
        return (masks if masks.ndim == 4 else masks[None]), masks.ndim == 4

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image_index: int = 0,
    ) -> ImagePrediction:
        """Predict masks from batched prompt tensors already in model-input coordinates.

        point_coords: B x N x 2 (x, y pixels of the ``image_size`` square input); point_labels:
        B x N; boxes: B x 4 (x1, y1, x2, y2, same frame); mask_input: B x 1 x 4h x 4w low-res
        logits (256 x 256 at image size 1024). A batch of one point set or one mask is shared by
        all B boxes or point sets. Returns an always-batched ImagePrediction at the image's size.
        """
        feats = self.features
        orig_hw = self._image_size(image_index)
        size = self.model.image_size
        convention = self.model.image_convention
        coords, labels = point_coords, point_labels
        if (coords is None) != (labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if boxes is not None:
            bcoords, blabels = box_to_points(boxes)
            if coords is not None:
                if coords.shape[0] != bcoords.shape[0]:
                    if coords.shape[0] != 1:
                        raise ValueError(
                            f"{bcoords.shape[0]} boxes but {coords.shape[0]} point sets"
                        )
                    coords, labels = (
                        coords.expand(bcoords.shape[0], -1, -1),
                        labels.expand(bcoords.shape[0], -1),
                    )
                coords = torch.cat([bcoords, coords], dim=1)
                labels = torch.cat([blabels, labels], dim=1)
            else:
                coords, labels = bcoords, blabels
        n = (
            coords.shape[0]
            if coords is not None
            else (mask_input.shape[0] if mask_input is not None else 1)
        )
        if mask_input is not None and mask_input.shape[0] not in (1, n):
            raise ValueError(
                f"{mask_input.shape[0]} masks in mask_input but {n} prompts (give one mask or one per prompt)"
            )

        pe = self.model.sam_prompt_encoder
        sparse, dense = pe(coords, labels, mask_input, batch_size=n)
        image = feats.take(image_index)
        out = self.model.sam_mask_decoder(
            image.embedding,
            pe.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            high_res_features=[x.expand(n, -1, -1, -1) for x in image.high_res],
            repeat_image=n > 1,
        )
        low = out.masks.float()
        masks = convention.masks_to_image(self._clean_low_res(low), orig_hw, size)
        low = convention.clamp_low_res(low)
        if not return_logits:
            masks = masks > self.mask_threshold
        return ImagePrediction(masks, out.iou.float(), low, out.object_score_logits.float())

    def _clean_low_res(self, low: torch.Tensor) -> torch.Tensor:
        """Fill small holes and erase small sprinkles (both found on the decoded logits)."""
        thr = self.mask_threshold
        cleaned = low
        if self.max_hole_area > 0:
            background = low <= thr
            _, areas = region_areas(background)
            cleaned = torch.where(background & (areas <= self.max_hole_area), thr + 10.0, cleaned)
        if self.max_sprinkle_area > 0:
            foreground = low > thr
            _, areas = region_areas(foreground)
            cleaned = torch.where(
                foreground & (areas <= self.max_sprinkle_area), thr - 10.0, cleaned
            )
        return cleaned

    def _image_size(self, image_index: int) -> tuple[int, int]:
        """(H, W) of the set image ``image_index``; RuntimeError before set_image, IndexError if out of range."""
        count = self.features.embedding.shape[0]
        if not 0 <= image_index < count:
            raise IndexError(f"image_index {image_index} out of range for {count} image(s)")
        return self._sizes[image_index]
