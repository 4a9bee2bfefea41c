"""Our own PyTorch implementation of SAM 2 and SAM 2.1 (and SAM 1, in ``sam2_core.sam1``).

Loads the official checkpoints unchanged and computes what the official code
computes. No Ray and no storage I/O here beyond reading checkpoints and configs, all
through :mod:`sam2_core.hub`.
"""

from .build import build_meta, build_model, resolve_config
from .checkpoint import CheckpointError, load_checkpoint
from .config import OFFICIAL_MODELS, ConfigError, ModelConfig, official_config
from .modeling.sam2 import SAM2Model
from .sam1 import SAM1Model, build_sam1, build_sam1_meta

__all__ = [
    "OFFICIAL_MODELS",
    "CheckpointError",
    "ConfigError",
    "ModelConfig",
    "SAM1Model",
    "SAM2Model",
    "build_meta",
    "build_model",
    "build_sam1",
    "build_sam1_meta",
    "load_checkpoint",
    "official_config",
    "resolve_config",
]
