"""SAM 1 (Segment Anything, ViT-B/L/H): Meta's checkpoints loaded unchanged, served by the same
:class:`~sam2_core.predictor.ImagePredictor` as SAM 2.

A subpackage of its own because SAM 1 is a separate model family with its own config, names and
checkpoint table; the parts it shares with SAM 2 (prompt encoder, mask decoder, two-way
transformer) are imported from :mod:`sam2_core.modeling`, not written twice.
"""

from .build import build_sam1, build_sam1_meta, resolve_sam1_config
from .checkpoints import SAM1_CHECKPOINTS, SAM1Checkpoint
from .config import SAM1_CONFIGS, SAM1Config, ViTConfig, sam1_config
from .model import SAM1Model

__all__ = [
    "SAM1_CHECKPOINTS",
    "SAM1_CONFIGS",
    "SAM1Checkpoint",
    "SAM1Config",
    "SAM1Model",
    "ViTConfig",
    "build_sam1",
    "build_sam1_meta",
    "resolve_sam1_config",
    "sam1_config",
]
