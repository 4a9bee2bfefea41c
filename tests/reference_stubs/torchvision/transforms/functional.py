"""``torchvision.transforms.functional`` stand-in: resize, to_pil_image, to_tensor."""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def resize_tensor(img: torch.Tensor, size: list[int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of a (B x) C x H x W float tensor to size = [h, w] (align_corners=False)."""
    if img.shape[-2] == size[0] and img.shape[-1] == size[1]:
        return img
    batched = img.dim() == 4
    x = img if batched else img.unsqueeze(0)
    x = F.interpolate(
        x, size=[size[0], size[1]], mode="bilinear", align_corners=False, antialias=antialias
    )
    return x if batched else x.squeeze(0)


def resize(
    img,
    size,
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    max_size=None,
    antialias=True,
):
    """torchvision's resize for size = (h, w): a PIL image goes through Pillow (bilinear, as
    torchvision does for PIL input), a tensor through :func:`resize_tensor`. Unchanged when
    already that size."""
    if isinstance(size, int) or len(size) != 2 or max_size is not None:
        raise NotImplementedError("stand-in resize takes an (h, w) size only")
    if interpolation != InterpolationMode.BILINEAR:
        raise NotImplementedError("stand-in resize is bilinear only")
    h, w = int(size[0]), int(size[1])
    if isinstance(img, torch.Tensor):
        return resize_tensor(img, [h, w], bool(antialias))
    from PIL import Image

    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR)


def to_pil_image(pic, mode=None):
    """H x W x 3 uint8 array (or a 3 x H x W uint8 tensor) -> PIL RGB image."""
    from PIL import Image

    if isinstance(pic, torch.Tensor):
        pic = pic.permute(1, 2, 0).cpu().numpy()
    arr = np.asarray(pic)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise NotImplementedError(
            f"stand-in to_pil_image takes H x W x 3 uint8, got {arr.dtype} {arr.shape}"
        )
    return Image.fromarray(arr, mode="RGB")


def to_tensor(pic) -> torch.Tensor:
    """H x W x C uint8 array or PIL image -> C x H x W float32 in [0, 1]."""
    arr = np.array(pic, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()
