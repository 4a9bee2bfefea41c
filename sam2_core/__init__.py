"""Our own PyTorch implementation of SAM 2 and SAM 2.1 (and SAM 1, in ``sam2_core.sam1``).

Loads the official checkpoints unchanged and computes what the official code
computes. No Ray and no storage I/O here beyond reading checkpoints and configs, all
through :mod:`sam2_core.hub`.
"""

from __future__ import annotations

import importlib

# Each public name and the submodule it lives in. They are imported on first use (PEP 562), so
# ``import sam2_core.hub`` or ``sam2_core.synthetic`` does not load torch and the model code.
_EXPORTS = {
    "OFFICIAL_MODELS": ".config_tree",
    "CheckpointError": ".checkpoint",
    "ConfigError": ".config_tree",
    "ModelConfig": ".config",
    "SAM1Model": ".sam1",
    "SAM2Model": ".modeling.sam2",
    "build_meta": ".build",
    "build_model": ".build",
    "build_sam1": ".sam1",
    "build_sam1_meta": ".sam1",
    "load_checkpoint": ".checkpoint",
    "official_config": ".config_tree",
    "resolve_config": ".build",
}

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


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
