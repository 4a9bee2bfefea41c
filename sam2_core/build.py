"""Building models: by official name, from an official-style config file, or from a ModelConfig."""

from __future__ import annotations

from dataclasses import replace

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


def resolve_config(
    model: str | dict | ModelConfig,
    storage_options: dict | None = None,
    apply_postprocessing: bool = True,
) -> ModelConfig:
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
        raise ConfigError(
            f"unknown model {model!r}: use an official name ({', '.join(sorted(OFFICIAL_CONFIG_FILES))}) or a path to a config file"
        )
    text = read_bytes(model, storage_options, what="model config").decode("utf-8")
    return parse_config_text(text, name=model)


def with_image_size(cfg: ModelConfig, image_size: int) -> ModelConfig:
    """``cfg`` run at another square input side (e.g. 512 instead of 1024): no weight depends on
    it, so the same checkpoint loads strictly. Hiera's position embedding is interpolated to the
    new grid and memory attention's RoPE tables are made for it; the encoder's cost falls with
    the pixel count, at some loss of mask detail (the weights were trained at ``cfg.image_size``).

    The side must be a multiple of 32 (the trunk's last stage is 1/32 of it) whose 1/4 grid the
    first window (``trunk.window_spec[0]``) tiles.
    """
    window = cfg.trunk.window_spec[0]
    if image_size < 32 or image_size % 32 or (image_size // 4) % window:
        raise ValueError(
            f"image size {image_size} does not fit {cfg.name}: use a multiple of 32 whose quarter "
            f"is a multiple of the first window size {window} (e.g. 512, 768 or 1024)"
        )
    side = image_size // cfg.backbone_stride
    attention = replace(cfg.memory_attention, feat_sizes=(side, side))
    return replace(cfg, image_size=image_size, memory_attention=attention)


def build_model(
    model: str | dict | ModelConfig,
    checkpoint: str | CheckpointBytes | None = None,
    device: str | torch.device = "cpu",
    storage_options: dict | None = None,
    apply_postprocessing: bool = True,
    image_size: int | None = None,
) -> SAM2Model:
    """Build a SAM 2 model in eval mode (a SAM1Model for a SAM 1 name, ``sam_vit_b/l/h``: one
    way in for the pipeline); load ``checkpoint`` strictly when given (random weights otherwise).

    ``checkpoint``: an official name, a path or fsspec URL, or bytes from
    :func:`sam2_core.hub.read_checkpoint` (whose digest the caller has checked).

    ``apply_postprocessing`` (official names only) matches Meta's ``build_sam2*`` default.
    ``image_size``: run at this input side instead of the config's (:func:`with_image_size`).
    """
    if isinstance(model, str) and model in SAM1_CONFIGS:
        return build_sam1(
            model, checkpoint, device, storage_options=storage_options, image_size=image_size
        )
    cfg = resolve_config(model, storage_options, apply_postprocessing)
    if image_size is not None and image_size != cfg.image_size:
        cfg = with_image_size(cfg, image_size)
    net = SAM2Model(cfg)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, storage_options)
    return net.to(device).eval()


def build_meta(model: str | dict | ModelConfig) -> SAM2Model:
    """Build on the meta device: shapes and names without allocating weights."""
    cfg = resolve_config(model)
    with torch.device("meta"):
        return SAM2Model(cfg)
