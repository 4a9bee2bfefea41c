"""Post-processing of predicted mask logits, as Meta's video predictor applies it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

def region_areas(mask: torch.Tensor, max_area: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label the 8-connected regions of a boolean ``mask`` (... x H x W) that have at most
    ``max_area`` pixels.

    Returns (labels, areas), int64 tensors shaped like ``mask``. For a pixel of a region of at
    most ``max_area`` pixels: labels is the region's label (1 + the raster index of its first
    pixel, so labels order regions as a raster scan finds them) and areas its pixel count. A
    pixel of a larger region gets area ``max_area + 1`` (its label is then not meaningful);
    pixels off the mask get 0 and 0.

    Regions are labelled by min-label propagation; after ``max_area`` rounds every region that
    small carries one label. A labelled set counts as a whole region only if it is closed (no
    neighbour on the mask carries another label), so parts of large regions are never taken
    for small ones.
    """
    shape = mask.shape
    h, w = shape[-2:]
    m = mask.reshape(-1, 1, h, w).bool()
    b = m.shape[0]
    # Labels must be exact in floating point (max_pool2d works on floats only).
    dtype = torch.float32 if h * w + 2 < 2**24 else torch.float64
    far = float(h * w + 1)
    ids = torch.arange(1, h * w + 1, device=m.device, dtype=dtype).reshape(1, 1, h, w)
    labels = torch.where(m, ids, torch.full((), far, dtype=dtype, device=m.device))

    def neighbourhood_min(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(F.pad(-x, (1, 1, 1, 1), value=-far), kernel_size=3, stride=1)

    for step in range(max(max_area, 0)):
        new = torch.where(m, neighbourhood_min(labels), labels)
        if step % 8 == 7 and torch.equal(new, labels):
            break
        labels = new
    low = neighbourhood_min(labels)
    high = F.max_pool2d(F.pad(torch.where(m, labels, torch.zeros_like(labels)), (1, 1, 1, 1)), kernel_size=3, stride=1)
    open_pixel = m & ((low != labels) | (high != labels))

    flat = torch.where(m, labels, torch.zeros_like(labels)).reshape(b, -1).long()
    on = m.reshape(b, -1)
    counts = torch.zeros(b, h * w + 1, dtype=torch.int64, device=m.device)
    counts.scatter_add_(1, flat, on.long())
    is_open = torch.zeros(b, h * w + 1, dtype=torch.bool, device=m.device)
    is_open.scatter_(1, torch.where(open_pixel.reshape(b, -1), flat, torch.zeros_like(flat)), True)
    region_area = torch.where(is_open, max_area + 1, counts.clamp(max=max_area + 1))
    areas = torch.where(on, torch.gather(region_area, 1, flat), 0)
    return flat.reshape(shape), areas.reshape(shape)


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Turn background holes (8-connected regions of logits <= 0) of at most ``max_area``
    pixels into foreground (logit 0.1). logits: B x 1 x H x W."""
    if max_area <= 0:
        return logits
    background = logits <= 0
    _, areas = region_areas(background, max_area)
    hole = background & (areas <= max_area)
    return torch.where(hole, torch.full_like(logits, 0.1), logits)
