"""Building models: by official name, from an official-style config file, or from a ModelConfig."""

from __future__ import annotations

import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .config_tree import (
    OFFICIAL_CONFIG_FILES,
    ConfigError,
    config_from_document,
    official_config,
    parse_config_text,
)
from .hub import CheckpointBytes, read_bytes
from .modeling.sam2 import SAM2Model
from .sam1 import SAM1_CONFIGS, build_sam1


def resolve_config(model: str | dict | ModelConfig, storage_options: dict | None = None, apply_postprocessing: bool = True) -> ModelConfig:
    """An official name, a path/URL to a YAML or config.json, a config tree, or a ModelConfig.

    Official names get Meta's default post-processing settings unless ``apply_postprocessing``
    is False (see :func:`official_config`); config files and trees are taken as written.
    """
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, dict):
        return config_from_document(model)
    if model in OFFICIAL_CONFIG_FILES:
        return official_config(model, postprocessing=apply_postprocessing)
    looks_like_file = any(model.endswith(ext) for ext in (".yaml", ".yml", ".json")) or "/" in model
    if not looks_like_file:
        raise ConfigError(f"unknown model {model!r}: use an official name ({', '.join(sorted(OFFICIAL_CONFIG_FILES))}) or a path to a config file")
    text = read_bytes(model, storage_options, what="model config").decode("utf-8")
    return parse_config_text(text, name=model)


def build_model(
    model: str | dict | ModelConfig,
    checkpoint: str | CheckpointBytes | None = None,
    device: str | torch.device = "cpu",
    storage_options: dict | None = None,
    apply_postprocessing: bool = True,
) -> SAM2Model:
    """Build a SAM 2 model in eval mode (a SAM1Model for a SAM 1 name, ``sam_vit_b/l/h``: one
    way in for the pipeline); load ``checkpoint`` strictly when given (random weights otherwise).

    ``checkpoint``: an official name, a path or fsspec URL, or bytes from
    :func:`sam2_core.hub.read_checkpoint` (whose digest the caller has checked).

    ``apply_postprocessing`` (official names only) matches Meta's ``build_sam2*`` default.
    """
    if isinstance(model, str) and model in SAM1_CONFIGS:
        return build_sam1(model, checkpoint, device, storage_options=storage_options)
    cfg = resolve_config(model, storage_options, apply_postprocessing)
    net = SAM2Model(cfg)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, storage_options)
    return net.to(device).eval()


def build_meta(model: str | dict | ModelConfig) -> SAM2Model:
    """Build on the meta device: shapes and names without allocating weights."""
    cfg = resolve_config(model)
    with torch.device("meta"):
        return SAM2Model(cfg)
