"""Building SAM 1 models by official name or config, loading Meta's checkpoints strictly."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..checkpoint import load_checkpoint
from .config import SAM1Config, sam1_config
from .model import SAM1Model


def resolve_sam1_config(model: str | SAM1Config, image_size: int | None = None) -> SAM1Config:
    """An official name (``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``) or a SAM1Config,
    optionally at another input size."""
    if isinstance(model, SAM1Config):
        return model if image_size is None else replace(model, image_size=image_size)
    return sam1_config(model, image_size)


def build_sam1(
    model: str | SAM1Config,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    storage_options: dict | None = None,
) -> SAM1Model:
    """A SAM 1 model in eval mode; ``checkpoint`` (a local path or fsspec URL of Meta's bare
    state dict) is loaded strictly: any missing, unexpected or mis-shaped tensor is refused with
    the list. Random weights when no checkpoint is given."""
    net = SAM1Model(resolve_sam1_config(model, image_size))
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, storage_options)
    return net.to(device).eval()


def build_sam1_meta(model: str | SAM1Config, image_size: int | None = None) -> SAM1Model:
    """Build on the meta device: names and shapes without allocating weights."""
    cfg = resolve_sam1_config(model, image_size)
    with torch.device("meta"):
        return SAM1Model(cfg)
