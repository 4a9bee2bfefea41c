"""Turning images into model input, and prompts into model-input coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_rgb_array(image) -> np.ndarray:
    """Accept an H x W x 3 uint8 array or a PIL image; return the array."""
    if hasattr(image, "convert") and hasattr(image, "size"):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    return image


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 3, 1, 1)
    return (x - mean) / std


def image_to_input(image, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Image predictor preprocessing: bilinear (antialiased) resize to size x size, ImageNet normalisation.

    Returns 1 x 3 x size x size float32.
    """
    arr = as_rgb_array(image)
    x = (
        torch.tensor(arr, device=device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    )  # a copy: PIL arrays are read-only
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _normalise(x)


FRAME_RESIZES = ("torch", "pillow")
"""How video frames are resized to the model's input (``video_frame_to_input``)."""


def video_frame_to_input(frame: np.ndarray, size: int, resize: str = "pillow") -> torch.Tensor:
    """Video preprocessing as in the official video predictor: a bicubic resize of the uint8
    frame, then /255 and ImageNet normalisation. Returns 3 x size x size float32.

    ``resize``: "pillow" is the official loader's own resize (Pillow, bit-identical input);
    "torch" is torch's antialiased bicubic resize of the uint8 frame, made to follow Pillow's:
    about 5x faster, every value within one grey level of Pillow's (a few in a thousand of
    them differ when downscaling 480x640, a few in a million when upscaling), which is enough
    to move the long parity case's logits past its 1e-2 tolerance (see docs/PERFORMANCE.md).
    """
    arr = as_rgb_array(frame)
    if resize not in FRAME_RESIZES:
        raise ValueError(f"resize must be one of {FRAME_RESIZES}, got {resize!r}")
    if arr.shape[0] == size and arr.shape[1] == size:
        x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
    elif resize == "pillow":
        from PIL import Image

        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
        x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
    else:
        # The H x W x 3 array seen as a channels-last 1 x 3 x H x W tensor: torch's uint8
        # antialiased path reads it without a copy.
        x = F.interpolate(
            torch.from_numpy(np.array(arr, copy=False)).permute(2, 0, 1)[None],
            size=(size, size),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )[0]
    return _normalise_uint8(x)


def _normalise_uint8(x: torch.Tensor) -> torch.Tensor:
    """3 x H x W uint8 -> ImageNet-normalised float32, contiguous, in one multiply-add
    (x / 255 - mean) / std = x * (1 / (255 std)) - mean / std."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = torch.empty(x.shape, dtype=torch.float32)
    return torch.addcmul(-mean / std, x, 1.0 / (255.0 * std), out=out)


def to_model_coords(coords: torch.Tensor, orig_hw: tuple[int, int], size: int) -> torch.Tensor:
    """Pixel coordinates (x, y) of an orig_hw image -> pixels of the size x size model input."""
    h, w = orig_hw
    scale = torch.tensor([size / w, size / h], dtype=torch.float32, device=coords.device)
    return coords.float() * scale


def box_to_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 4 boxes (x1, y1, x2, y2) -> B x 2 x 2 corner points with labels 2 and 3."""
    coords = boxes.reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device).expand(
        coords.shape[0], 2
    )
    return coords, labels


def longest_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling the longer side to ``size`` (rounded as SAM 1's ResizeLongestSide)."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def longest_side_to_input(image, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """SAM 1 preprocessing: the longer side resized to ``size`` (Pillow bilinear on uint8, as
    torchvision does for PIL images), ImageNet normalisation in 0-255 units, zero padding at the
    bottom and right. Returns 1 x 3 x size x size float32."""
    from PIL import Image

    arr = as_rgb_array(image)
    h, w = longest_side_shape(arr.shape[0], arr.shape[1], size)
    if (h, w) != arr.shape[:2]:
        arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
    x = torch.tensor(arr, device=device).permute(2, 0, 1).unsqueeze(0).float()
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN], device=device).view(1, 3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD], device=device).view(1, 3, 1, 1)
    return F.pad((x - mean) / std, (0, size - w, 0, size - h))


@dataclass(frozen=True)
class ImageConvention:
    """How a model family maps an image into its square input and masks back out.

    letterbox: SAM 1 scales the longer side to the input size and pads (prompts scale with the
    image's aspect ratio; masks are cropped before upsampling); SAM 2 stretches the image to a
    square. low_res_clamp: bound on the returned low-res logits (SAM 2's predictor clamps to
    +-32; SAM 1's returns them as decoded).
    """

    letterbox: bool
    low_res_clamp: float | None

    def image_to_input(self, image, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """H x W x 3 uint8 image -> 1 x 3 x size x size model input."""
        return (
            longest_side_to_input(image, size, device)
            if self.letterbox
            else image_to_input(image, size, device)
        )

    def to_model_coords(
        self, coords: torch.Tensor, orig_hw: tuple[int, int], size: int
    ) -> torch.Tensor:
        """Pixel (x, y) of an orig_hw image -> pixels of the model input."""
        if not self.letterbox:
            return to_model_coords(coords, orig_hw, size)
        h, w = longest_side_shape(orig_hw[0], orig_hw[1], size)
        scale = torch.tensor(
            [w / orig_hw[1], h / orig_hw[0]], dtype=torch.float32, device=coords.device
        )
        return coords.float() * scale

    def masks_to_image(
        self, low_res: torch.Tensor, orig_hw: tuple[int, int], size: int
    ) -> torch.Tensor:
        """B x M x h x w low-res logits -> B x M x H x W logits on the original image."""
        if self.letterbox:
            h, w = longest_side_shape(orig_hw[0], orig_hw[1], size)
            low_res = F.interpolate(
                low_res, size=(size, size), mode="bilinear", align_corners=False
            )[..., :h, :w]
        return F.interpolate(low_res, size=orig_hw, mode="bilinear", align_corners=False)

    def clamp_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        return (
            low_res
            if self.low_res_clamp is None
            else low_res.clamp(-self.low_res_clamp, self.low_res_clamp)
        )


SAM2_IMAGE_CONVENTION = ImageConvention(letterbox=False, low_res_clamp=32.0)
SAM1_IMAGE_CONVENTION = ImageConvention(letterbox=True, low_res_clamp=None)
