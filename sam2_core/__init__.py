"""Our own PyTorch implementation of SAM 2 and SAM 2.1.

Loads the official checkpoints unchanged and computes what the official code
computes. No Ray and no storage I/O here beyond reading checkpoints and configs, all
through :mod:`sam2_core.hub`.
"""

from .build import build_meta, build_model, resolve_config
from .checkpoint import CheckpointError, load_checkpoint
from .config import OFFICIAL_MODELS, ConfigError, ModelConfig, official_config
from .modeling.sam2 import SAM2Model

__all__ = [
    "OFFICIAL_MODELS",
    "CheckpointError",
    "ConfigError",
    "ModelConfig",
    "SAM2Model",
    "build_meta",
    "build_model",
    "load_checkpoint",
    "official_config",
    "resolve_config",
]
