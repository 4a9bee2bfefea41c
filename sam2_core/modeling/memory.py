"""Video memory: memory attention (frame features attend to past memories) and the memory encoder."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import MemoryAttentionConfig, MemoryEncoderConfig
from .common import LayerNorm, LayerNorm2d, PositionEmbeddingSine
from .precision import float32_island
from .transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """Self-attention over the current frame, cross-attention to memory, then a feed-forward."""

    def __init__(self, cfg: MemoryAttentionConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.self_attn = RoPEAttention(
            d,
            cfg.num_heads,
            dropout=cfg.dropout,
            rope_theta=cfg.rope_theta,
            feat_sizes=cfg.feat_sizes,
        )
        self.cross_attn_image = RoPEAttention(
            d,
            cfg.num_heads,
            dropout=cfg.dropout,
            kv_in_dim=cfg.kv_in_dim,
            rope_theta=cfg.rope_theta,
            feat_sizes=cfg.feat_sizes,
            rope_k_repeat=cfg.rope_k_repeat,
        )
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = LayerNorm(d)
        self.norm2 = LayerNorm(d)
        self.norm3 = LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation = nn.ReLU()

    # Float32 islands under autocast (sam2_core.modeling.precision): each of the three steps
    # may run in reduced precision on its own.
    keep_self_attention_float32 = True
    keep_cross_attention_float32 = True
    keep_feed_forward_float32 = False

    @float32_island(switch="keep_self_attention_float32")
    def attend_self(self, x: torch.Tensor, x_pos: torch.Tensor) -> torch.Tensor:
        """The frame's tokens attend to each other (no memory involved)."""
        h = self.norm1(x)
        qk = h + x_pos if self.cfg.pos_enc_at_attn else h
        return x + self.dropout(self.self_attn(qk, qk, h))

    @float32_island(switch="keep_cross_attention_float32")
    def attend_memory(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        x_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        num_k_exclude_rope: int,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Cross-attention to the memory. ``x`` may have batch 1 against a memory of batch B
        (one frame shared by B objects): the result has batch B."""
        cfg = self.cfg
        h = self.norm2(x)
        q = h + x_pos if cfg.pos_enc_at_cross_attn_queries else h
        k = memory + memory_pos if cfg.pos_enc_at_cross_attn_keys else memory
        return x + self.dropout(
            self.cross_attn_image(
                q, k, memory, num_k_exclude_rope=num_k_exclude_rope, key_mask=key_mask
            )
        )

    @float32_island(switch="keep_feed_forward_float32")
    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The token-wise two-layer MLP."""
        h = self.norm3(x)
        return x + self.dropout(self.linear2(self.dropout(self.activation(self.linear1(h)))))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        x_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        num_k_exclude_rope: int,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x = self.attend_self(x, x_pos)
        x = self.attend_memory(x, memory, x_pos, memory_pos, num_k_exclude_rope, key_mask)
        return self.feed_forward(x)


class MemoryAttention(nn.Module):
    """Conditions the current frame's features on memory tokens (spatial memories + object pointers)."""

    keep_float32 = False  # its layers' switches say which steps run in reduced precision

    def __init__(self, cfg: MemoryAttentionConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(MemoryAttentionLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = LayerNorm(cfg.d_model)

    @float32_island
    def forward(
        self,
        current: torch.Tensor,
        current_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """current, current_pos: B x HW x C, or 1 x HW x C for one frame shared by all B objects
        (its first self-attention, which sees no memory, then runs once); memory, memory_pos:
        B x M x mem_dim, where the last ``num_obj_ptr_tokens`` tokens are object pointers;
        key_mask: B x M (True = real token)."""
        x = current
        if self.cfg.pos_enc_at_input:
            x = x + 0.1 * current_pos
        for layer in self.layers:
            x = layer(x, memory, current_pos, memory_pos, num_obj_ptr_tokens, key_mask)
        return self.norm(x)


class MaskDownSampler(nn.Module):
    """Strided convolutions taking a full-resolution mask down to the feature grid."""

    def __init__(self, cfg: MemoryEncoderConfig):
        super().__init__()
        n = int(math.log2(cfg.mask_total_stride) // math.log2(cfg.mask_stride))
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(n):
            out = chans * cfg.mask_stride**2
            layers += [
                nn.Conv2d(chans, out, cfg.mask_kernel_size, cfg.mask_stride, cfg.mask_padding),
                LayerNorm2d(out),
                nn.GELU(),
            ]
            chans = out
        layers.append(nn.Conv2d(chans, cfg.mask_embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depth-wise conv, norm, point-wise MLP, layer scale, residual."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        padding: int,
        layer_scale_init_value: float,
        use_dwconv: bool,
    ):
        super().__init__()
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        h = self.gamma * self.pwconv2(self.act(self.pwconv1(h)))
        return x + h.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, cfg: MemoryEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            CXBlock(
                cfg.fuser_dim,
                cfg.fuser_kernel_size,
                cfg.fuser_padding,
                cfg.layer_scale_init_value,
                cfg.use_dwconv,
            )
            for _ in range(cfg.fuser_num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Fuses a frame's features with its (already scaled) mask into a memory: B x mem_dim x h x w."""

    def __init__(self, cfg: MemoryEncoderConfig):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(cfg)
        self.pix_feat_proj = nn.Conv2d(cfg.in_dim, cfg.in_dim, kernel_size=1)
        self.fuser = Fuser(cfg)
        self.position_encoding = PositionEmbeddingSine(cfg.num_pos_feats)
        self.out_proj = (
            nn.Conv2d(cfg.in_dim, cfg.out_dim, kernel_size=1)
            if cfg.out_dim != cfg.in_dim
            else nn.Identity()
        )

    @float32_island
    def forward(
        self, pix_feat: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat: B x C x h x w; mask: B x 1 x S x S (values fed as is). Returns (features, pos)."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x).to(x.dtype)
