"""``torchvision.ops`` stand-in: box_area, nms, batched_nms."""

from . import boxes
from .boxes import batched_nms, box_area, nms

__all__ = ["batched_nms", "box_area", "boxes", "nms"]
