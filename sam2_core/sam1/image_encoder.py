"""SAM 1's image encoder: a plain ViT with windowed and global attention (ViTDet style),
decomposed relative position biases, and a small convolutional neck to 256 channels.

Parameter names are those of Meta's checkpoints (``image_encoder.blocks.<i>.attn.qkv``...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.common import LayerNorm, LayerNorm2d, MLPBlock
from .config import ViTConfig


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B * nW) x window x window x C, zero-padding H and W up to multiples of
    ``window``; also returns the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: back to B x H x W x C, padding removed."""
    hp, wp = padded_hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).transpose(2, 3)
    return x.reshape(b, hp, wp, -1)[:, : hw[0], : hw[1]]


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Embeddings of every query-key offset along one axis of length ``size``: size x size x d.

    ``table`` holds one row per offset (L x d); when L != 2 * size - 1 (another input size than
    the checkpoint's) it is resized linearly first.
    """
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear").squeeze(0).t()
    pos = torch.arange(size, device=table.device)
    return table[pos[:, None] - pos[None, :] + size - 1]


class ViTAttention(nn.Module):
    """Multi-head self-attention over a H x W token grid with decomposed relative position biases
    (a learned bias per row offset plus one per column offset, each read by the query)."""

    def __init__(self, dim: int, num_heads: int, rel_pos_size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x C -> B x H x W x C."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each B x heads x HW x d
        rq = q.reshape(b, self.num_heads, h, w, -1)
        bias_h = torch.einsum("bnhwd,hkd->bnhwk", rq, relative_table(self.rel_pos_h, h))
        bias_w = torch.einsum("bnhwd,wkd->bnhwk", rq, relative_table(self.rel_pos_w, w))
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(
            b, self.num_heads, h * w, h * w
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class ViTBlock(nn.Module):
    """Pre-norm transformer block; attention within windows (``window_size`` > 0) or global."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: int):
        super().__init__()
        self.window_size = window_size
        side = window_size if window_size > 0 else grid
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads, (side, side))
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x C."""
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: B x 3 x S x S -> B x S/p x S/p x C."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """B x 3 x S x S normalised, padded images -> B x 256 x S/16 x S/16 embeddings.

    Works at any S that is a multiple of the patch size: the absolute position embedding (held at
    the pretraining grid) is resized by nearest neighbour, as Ultralytics' ``set_imgsz`` does,
    and the global blocks' relative tables linearly (see :func:`relative_table`).
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        grid = cfg.pretrain_image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                0 if i in cfg.global_attn_indexes else cfg.window_size,
                grid,
            )
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The absolute position embedding for a height x width token grid: 1 x h x w x C."""
        pos = self.pos_embed
        if tuple(pos.shape[1:3]) != (height, width):
            pos = F.interpolate(
                pos.permute(0, 3, 1, 2), size=(height, width), mode="nearest"
            ).permute(0, 2, 3, 1)
        return pos

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
