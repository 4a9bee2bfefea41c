"""Turning images into model input, and prompts into model-input coordinates."""

from __future__ import annotations

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
    x = torch.tensor(arr, device=device).permute(2, 0, 1).unsqueeze(0).float() / 255.0  # a copy: PIL arrays are read-only
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _normalise(x)


def video_frame_to_input(frame: np.ndarray, size: int) -> torch.Tensor:
    """Video preprocessing as in the official video predictor: a bicubic resize of the uint8
    frame (Pillow), then /255 and ImageNet normalisation. Returns 3 x size x size float32."""
    from PIL import Image

    arr = as_rgb_array(frame)
    if arr.shape[0] != size or arr.shape[1] != size:
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return _normalise(x)[0]


def to_model_coords(coords: torch.Tensor, orig_hw: tuple[int, int], size: int) -> torch.Tensor:
    """Pixel coordinates (x, y) of an orig_hw image -> pixels of the size x size model input."""
    h, w = orig_hw
    scale = torch.tensor([size / w, size / h], dtype=torch.float32, device=coords.device)
    return coords.float() * scale


def box_to_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 4 boxes (x1, y1, x2, y2) -> B x 2 x 2 corner points with labels 2 and 3."""
    coords = boxes.reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device).expand(coords.shape[0], 2)
    return coords, labels
