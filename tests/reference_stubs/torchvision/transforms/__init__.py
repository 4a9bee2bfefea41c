"""``torchvision.transforms`` stand-in: ToTensor, Resize, Normalize (scriptable modules)."""

from __future__ import annotations

import torch
from torch import nn

from . import functional
from .functional import InterpolationMode


class ToTensor:
    """H x W x C uint8 array or PIL image -> C x H x W float32 in [0, 1]."""

    def __call__(self, pic) -> torch.Tensor:
        return functional.to_tensor(pic)


class Resize(nn.Module):
    """Resize a ... x H x W tensor to ``size`` (an (h, w) pair), bilinear and antialiased."""

    def __init__(
        self,
        size,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        max_size=None,
        antialias: bool = True,
    ):
        super().__init__()
        if isinstance(size, int):
            raise NotImplementedError("stand-in Resize takes an (h, w) size only")
        if interpolation != InterpolationMode.BILINEAR or max_size is not None:
            raise NotImplementedError("stand-in Resize is bilinear without max_size")
        self.size: list[int] = [int(size[0]), int(size[1])]
        self.antialias: bool = bool(antialias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return functional.resize_tensor(img, self.size, self.antialias)


class Normalize(nn.Module):
    """(x - mean) / std per channel of a ... x C x H x W tensor."""

    def __init__(self, mean, std, inplace: bool = False):
        super().__init__()
        self.mean: list[float] = [float(m) for m in mean]
        self.std: list[float] = [float(s) for s in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std


__all__ = ["InterpolationMode", "Normalize", "Resize", "ToTensor", "functional"]
