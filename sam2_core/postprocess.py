"""Post-processing of predicted mask logits, as Meta's video predictor applies it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_FAR = float(2**30)


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Turn background holes (8-connected regions of logits <= 0) of at most ``max_area``
    pixels into foreground (logit 0.1). logits: B x 1 x H x W.

    Connected regions are labelled by min-label propagation among background pixels; after
    ``max_area`` rounds every region that small carries one label. A labelled region counts as
    a hole only if it is closed (no background neighbour carries another label), so partial
    regions of large backgrounds are never filled.
    """
    if max_area <= 0:
        return logits
    b, _, h, w = logits.shape
    bg = logits <= 0
    ids = torch.arange(1, h * w + 1, device=logits.device, dtype=torch.float32).reshape(1, 1, h, w)
    labels = torch.where(bg, ids.expand(b, -1, -1, -1), torch.full_like(logits, _FAR, dtype=torch.float32))

    def neighbourhood_min(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(F.pad(-x, (1, 1, 1, 1), value=-_FAR), kernel_size=3, stride=1)

    for _ in range(max_area):
        labels = torch.where(bg, neighbourhood_min(labels), labels)
    low = neighbourhood_min(labels)
    high = F.max_pool2d(F.pad(torch.where(bg, labels, torch.zeros_like(labels)), (1, 1, 1, 1)), kernel_size=3, stride=1)
    open_pixel = bg & ((low != labels) | (high != labels))

    flat = labels.reshape(b, -1).long().clamp(max=h * w + 1)
    bg_flat = bg.reshape(b, -1)
    counts = torch.zeros(b, h * w + 2, device=logits.device)
    counts.scatter_add_(1, torch.where(bg_flat, flat, torch.zeros_like(flat)), bg_flat.float())
    is_open = torch.zeros(b, h * w + 2, dtype=torch.bool, device=logits.device)
    is_open.scatter_(1, torch.where(open_pixel.reshape(b, -1), flat, torch.zeros_like(flat)), True)
    small = (counts <= max_area) & ~is_open
    small[:, 0] = False
    hole = bg_flat & torch.gather(small, 1, flat)
    return torch.where(hole.reshape(b, 1, h, w), torch.full_like(logits, 0.1), logits)
