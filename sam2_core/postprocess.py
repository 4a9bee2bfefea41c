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
    labels = torch.where(
        bg, ids.expand(b, -1, -1, -1), torch.full_like(logits, _FAR, dtype=torch.float32)
    )

    def neighbourhood_min(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(F.pad(-x, (1, 1, 1, 1), value=-_FAR), kernel_size=3, stride=1)

    for _ in range(max_area):
        labels = torch.where(bg, neighbourhood_min(labels), labels)
    low = neighbourhood_min(labels)
    high = F.max_pool2d(
        F.pad(torch.where(bg, labels, torch.zeros_like(labels)), (1, 1, 1, 1)),
        kernel_size=3,
        stride=1,
    )
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


def _run_min(labels: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Each horizontal run of ``on`` pixels (B x H x W) takes the smallest label in it."""
    starts = on.clone()
    starts[..., 1:] &= ~on[..., :-1]
    segment = torch.cumsum(starts.reshape(-1), 0)
    flat = labels.reshape(-1)
    smallest = torch.full(
        (int(segment[-1]) + 1,), float("inf"), dtype=labels.dtype, device=labels.device
    )
    smallest.scatter_reduce_(0, segment, torch.where(on.reshape(-1), flat, float("inf")), "amin")
    return torch.where(on.reshape(-1), smallest[segment], flat).reshape(labels.shape)


def region_areas(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label the 8-connected regions of a boolean ``mask`` (... x H x W).

    Returns (labels, areas), int64 tensors shaped like ``mask``: for a pixel on the mask, its
    region's label (1 + the raster index of the region's first pixel, so labels order regions
    as a raster scan finds them) and the region's pixel count; 0 and 0 off the mask.

    Every label starts as the pixel's own and falls, round after round, to the smallest in its
    horizontal run, its vertical run and its 3 x 3 neighbourhood, and to the label of the pixel
    its label names (pointer jumping); this stops when nothing changes, at which point each
    region carries one label: that of its first pixel. Rounds grow with the number of turns a
    region's paths take, not with its size.
    """
    shape = mask.shape
    h, w = shape[-2:]
    m = mask.reshape(-1, h, w).bool()
    b = m.shape[0]
    # Labels must be exact in floating point (max_pool2d works on floats only).
    dtype = torch.float32 if h * w + 2 < 2**24 else torch.float64
    far = float(h * w + 1)
    ids = torch.arange(1, h * w + 1, device=m.device, dtype=dtype).reshape(1, h, w)
    labels = torch.where(m, ids, torch.full((), far, dtype=dtype, device=m.device))
    on = m.reshape(b, -1)
    m_t = m.transpose(1, 2).contiguous()

    def neighbourhood_min(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(F.pad(-x[:, None], (1, 1, 1, 1), value=-far), kernel_size=3, stride=1)[
            :, 0
        ]

    while True:
        new = _run_min(labels, m)
        new = _run_min(new.transpose(1, 2).contiguous(), m_t).transpose(1, 2)
        new = torch.where(m, neighbourhood_min(new), new).reshape(b, -1)
        for _ in range(2):
            named = torch.gather(new, 1, (new.long() - 1).clamp(0, h * w - 1))
            new = torch.where(on, torch.minimum(new, named), new)
        new = new.reshape(b, h, w)
        if torch.equal(new, labels):
            break
        labels = new

    flat = torch.where(on, labels.reshape(b, -1).long(), 0)
    counts = torch.zeros(b, h * w + 1, dtype=torch.int64, device=m.device)
    counts.scatter_add_(1, flat, on.long())
    areas = torch.where(on, torch.gather(counts, 1, flat), 0)
    return flat.reshape(shape), areas.reshape(shape)
