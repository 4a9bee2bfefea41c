"""Hiera: the hierarchical vision transformer that is SAM 2's image trunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrunkConfig
from .common import MLP, KeptWhileUnchanged, LayerNorm


def _pool(x: torch.Tensor, pool: nn.Module | None) -> torch.Tensor:
    """Max-pool a B x H x W x C tensor spatially."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B * nW) x size x size x C, zero-padding H and W up to multiples of size."""
    b, h, w, c = x.shape
    ph, pw = (-h) % size, (-w) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def _from_windows(
    x: torch.Tensor, size: int, padded: tuple[int, int], out: tuple[int, int]
) -> torch.Tensor:
    """Inverse of _to_windows, cropping the padding away."""
    hp, wp = padded
    b = x.shape[0] // ((hp // size) * (wp // size))
    x = x.view(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : out[0], : out[1]].contiguous()


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution; returns B x H x W x C."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Attention whose queries may be pooled (the first block of a stage halves resolution)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None):
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)
        if self.q_pool is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with windowed (or global) attention and optional pooling."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float,
        q_stride: tuple[int, int] | None,
        window_size: int,
    ):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.pool = (
            nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
            if q_stride
            else None
        )
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool(self.proj(x), self.pool)
        size = self.window_size
        h, w = x.shape[1:3]
        if size > 0:
            x, padded = _to_windows(x, size)
        x = self.attn(x)
        if size > 0:
            if self.q_stride:
                # Queries were pooled inside each window: windows shrank by the stride.
                size = size // self.q_stride[0]
                h, w = shortcut.shape[1:3]
                padded = (h + (-h) % size, w + (-w) % size)
            x = _from_windows(x, size, padded, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hiera trunk: B x 3 x S x S image -> feature maps at strides 4, 8, 16, 32 (high-res first)."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        stages = list(cfg.stages)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][: cfg.q_pool]
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size)
        )
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, cfg.window_spec[0], cfg.window_spec[0])
        )
        self._pos_cache = KeptWhileUnchanged()

        blocks = []
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(stages)):
            dim_out = dim
            # The first block of a stage still uses the previous stage's window size:
            # it partitions at the old resolution, then pools its queries.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    cfg.mlp_ratio,
                    cfg.q_stride if i in q_pool_blocks else None,
                    window,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The position embedding of an h x w patch grid: 1 x h x w x C. It depends only on the
        weights and the grid, so it is kept between calls (one bicubic resize and one tile less
        per image) while no gradient is recorded and the weights are unchanged."""
        win = self.pos_embed_window

        def compute() -> torch.Tensor:
            pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
            return (pos + win.tile(1, 1, h // win.shape[2], w // win.shape[3])).permute(0, 2, 3, 1)

        return self._pos_cache.get((self.pos_embed, win), compute, extra=(h, w))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
