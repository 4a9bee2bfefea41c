"""Attention layers: plain and rotary (RoPE) attention, and the decoder's two-way transformer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .common import MLP, LayerNorm, attention, graph_capture


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an optional internal downsampling."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the internal dim {self.internal_dim}"
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        out = attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self._merge(out))


def axial_rope_angles(
    head_dim: int, width: int, height: int, theta: float, device: torch.device | None = None
) -> torch.Tensor:
    """Rotation angles for a width x height grid, row-major: (W*H) x (head_dim / 2).

    The first quarter of the head's channel pairs rotate with x, the second with y.
    """
    n = head_dim // 4
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[:n].float() / head_dim))
    idx = torch.arange(width * height, dtype=torch.float32, device=device)
    xs = idx % width
    ys = torch.div(idx, width, rounding_mode="floor")
    return torch.cat([torch.outer(xs, inv), torch.outer(ys, inv)], dim=-1)


def axial_rope_frequencies(
    head_dim: int, width: int, height: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the axial rotations of a width x height grid, each (W*H) x (head_dim / 2), float32.

    Taken from ``torch.polar`` as the official code does (``torch.cos`` differs from it in the
    last bit of some values), so that the rotations are bit-identical to the official ones.
    RoPEAttention builds it once for its configured grid (buffers), outside the per-call arithmetic.
    """
    angles = axial_rope_angles(head_dim, width, height, theta, device)
    rotations = torch.polar(torch.ones_like(angles), angles)
    return rotations.real.contiguous(), rotations.imag.contiguous()


def _complex_pairs(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """B x heads x (repeats * L) x d float32 seen as B x heads x repeats x L x d/2 complex (a view)."""
    return torch.view_as_complex(x.unflatten(-2, (repeats, -1)).unflatten(-1, (-1, 2)))


def rotate(
    x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor], repeats: int = 1
) -> torch.Tensor:
    """Rotate the channel pairs (2j, 2j+1) of B x heads x (repeats * L) x d by the angles whose
    (cos, sin) are L x d/2 (each block of L tokens alike); computed in float32, returned in x's
    dtype.

    The pairs are multiplied, read as complex numbers, by exp(i * angle) as the official code
    does: one complex multiplication (several times faster on a CPU than real arithmetic on the
    pairs). While tracing, compiling or exporting the same numbers come from real arithmetic,
    so that compilers (Inductor, ONNX) need no complex support.
    """
    cos, sin = freqs
    if graph_capture():
        if repeats > 1:
            cos, sin = cos.repeat(repeats, 1), sin.repeat(repeats, 1)
        pairs = x.float().unflatten(-1, (-1, 2))
        re, im = pairs[..., 0], pairs[..., 1]
        turned = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2)
        return turned.type_as(x)
    turned = _complex_pairs(x.float(), repeats) * torch.complex(cos.float(), sin.float())
    return torch.view_as_real(turned).flatten(-2).flatten(-3, -2).type_as(x)


def _rotate_keys(
    k: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor], n_rope: int, repeats: int
) -> torch.Tensor:
    """Keys with their first ``n_rope`` tokens rotated and the rest (object pointers) as given.

    In eager float32 inference the rotated keys are written straight into the result (the
    concatenation would copy every key once more).
    """
    if n_rope == k.shape[-2]:
        return rotate(k, freqs, repeats)
    in_place = k.dtype == torch.float32 and not (k.requires_grad and torch.is_grad_enabled())
    if not in_place or graph_capture():
        return torch.cat([rotate(k[:, :, :n_rope], freqs, repeats), k[:, :, n_rope:]], dim=2)
    out = torch.empty_like(k, memory_format=torch.contiguous_format)
    cis = torch.complex(freqs[0].float(), freqs[1].float())
    rotated = _complex_pairs(out[:, :, :n_rope], repeats)
    torch.mul(_complex_pairs(k[:, :, :n_rope], repeats), cis, out=rotated)
    out[:, :, n_rope:] = k[:, :, n_rope:]
    return out


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary position encoding on queries and (spatial) keys.

    With ``rope_k_repeat`` the keys may hold several frames of the query's grid, each
    rotated like the queries; the last ``num_k_exclude_rope`` keys (object pointers)
    are not rotated. The rotations of the ``feat_sizes`` grid are precomputed buffers
    (not saved in checkpoints); another square grid gets its rotations computed per call.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        cos, sin = axial_rope_frequencies(
            self.internal_dim // self.num_heads, *self.feat_sizes, rope_theta
        )
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _frequencies(
        self, n_queries: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each n_queries x head_dim/2, for a query grid of n_queries tokens."""
        if n_queries == self.rope_cos.shape[0]:
            return self.rope_cos, self.rope_sin  # buffers: already on the module's device
        side = int(round(math.sqrt(n_queries)))
        if side * side != n_queries:
            raise ValueError(f"RoPE attention needs a square query grid, got {n_queries} tokens")
        return axial_rope_frequencies(
            self.internal_dim // self.num_heads, side, side, self.rope_theta, device
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_mask``: optional B x Lk bool, True for keys that take part (padding is False)."""
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        freqs = self._frequencies(q.shape[-2], q.device)
        q = rotate(q, freqs)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope != q.shape[-2] and (not self.rope_k_repeat or n_rope % q.shape[-2]):
                raise ValueError(f"{n_rope} rotary keys do not tile {q.shape[-2]} queries")
            k = _rotate_keys(k, freqs, n_rope, n_rope // q.shape[-2])
        if q.shape[0] != k.shape[0]:  # one query set shared by every memory of the batch
            q = q.expand(k.shape[0], -1, -1, -1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = attention(q, k, v, mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self._merge(out))


MlpFactory = Callable[[int, int], nn.Module]
"""Builds the token MLP of a two-way block from (embedding_dim, mlp_dim)."""


def relu_mlp(embedding_dim: int, mlp_dim: int) -> nn.Module:
    """SAM 2's token MLP (parameters ``layers.0`` / ``layers.1``)."""
    return MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=nn.ReLU)


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves and to the image; then the image attends to the tokens.

    ``mlp_block`` builds the token MLP; SAM 1 and SAM 2 compute the same ReLU MLP but name its
    parameters differently (see :class:`~.common.MLPBlock`).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        mlp_block: MlpFactory = relu_mlp,
    ):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = LayerNorm(embedding_dim)
        self.mlp = mlp_block(embedding_dim, mlp_dim)
        self.norm3 = LayerNorm(embedding_dim)
        self.norm4 = LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """The mask decoder's transformer: prompt tokens and image features refine each other."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        mlp_block: MlpFactory = relu_mlp,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                mlp_block=mlp_block,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = LayerNorm(embedding_dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: B x C x h x w; tokens: B x N x C. Returns (tokens, image as B x hw x C)."""
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
