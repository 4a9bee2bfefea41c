"""Image encoder: Hiera trunk followed by the FPN neck."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import NeckConfig, TrunkConfig
from .common import PositionEmbeddingSine
from .hiera import Hiera
from .precision import float32_island


class FpnNeck(nn.Module):
    """Projects each trunk level to d_model channels, adding top-down features on chosen levels."""

    def __init__(self, cfg: NeckConfig):
        super().__init__()
        self.cfg = cfg
        self.position_encoding = PositionEmbeddingSine(cfg.num_pos_feats, cfg.temperature)
        self.convs = nn.ModuleList()
        for channels in cfg.backbone_channel_list:
            seq = nn.Sequential()
            seq.add_module("conv", nn.Conv2d(channels, cfg.d_model, kernel_size=1))
            self.convs.append(seq)
        if cfg.fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {cfg.fuse_type!r}")

    def forward(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        if len(levels) != n + 1:
            raise ValueError(f"neck expects {n + 1} trunk levels, got {len(levels)}")
        feats: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        above = None
        for i in range(n, -1, -1):  # lowest resolution first
            lateral = self.convs[n - i](levels[i])
            if i in self.cfg.fpn_top_down_levels and above is not None:
                mode = self.cfg.fpn_interp_model
                up = F.interpolate(
                    above.to(torch.float32),
                    scale_factor=2.0,
                    mode=mode,
                    align_corners=None if mode == "nearest" else False,
                    antialias=False,
                )
                above = lateral + up
                if self.cfg.fuse_type == "avg":
                    above = above / 2
            else:
                above = lateral
            feats[i] = above
            pos[i] = self.position_encoding(above).to(above.dtype)
        return feats, pos


@dataclass
class BackboneOutput:
    """Multi-level features, high resolution first (after ``scalp`` dropped the lowest levels)."""

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        return self.backbone_fpn[-1]


class ImageEncoder(nn.Module):
    """Trunk + neck. Returns every kept level with its position encoding."""

    def __init__(self, trunk_cfg: TrunkConfig, neck_cfg: NeckConfig):
        super().__init__()
        self.trunk = Hiera(trunk_cfg)
        self.neck = FpnNeck(neck_cfg)
        self.scalp = neck_cfg.scalp
        if list(self.trunk.channel_list) != list(neck_cfg.backbone_channel_list):
            raise ValueError(
                f"trunk channels {self.trunk.channel_list} do not match the neck's "
                f"backbone_channel_list {list(neck_cfg.backbone_channel_list)}"
            )

    @float32_island
    def forward(self, images: torch.Tensor) -> BackboneOutput:
        feats, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return BackboneOutput(list(feats), list(pos))
