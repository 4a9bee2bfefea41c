"""Small building blocks shared by several SAM 2 modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A stack of ``num_layers`` linear layers with an activation between them.

    Parameter names (``layers.<i>``) match the official checkpoints.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them, named ``lin1`` / ``lin2``.

    SAM 1's naming for the same computation as a two-layer :class:`MLP` (its ViT blocks and its
    two-way transformer use it); kept separate only so SAM 1 checkpoints load by name.
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, activation: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def graph_capture() -> bool:
    """True while a trace, script, compile or export records the model: no data-dependent
    shortcuts and no complex tensors then, and nothing taken from a cache as a constant."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


class KeptWhileUnchanged:
    """A tensor computed from ``sources`` (parameters or buffers) and kept between calls while
    they are unchanged: the same in-place versions, device and dtype, the same inference mode
    and the same ``extra`` key (e.g. a grid size). While a gradient is recorded through a
    source, or a trace or compile is under way, it is computed afresh every call (so that it
    carries its history, or the graph records the computation rather than a constant)."""

    def __init__(self):
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    def get(
        self, sources: Sequence[torch.Tensor], compute: Callable[[], torch.Tensor], extra=()
    ) -> torch.Tensor:
        live = graph_capture() or (
            torch.is_grad_enabled() and any(s.requires_grad for s in sources)
        )
        if live:
            return compute()
        first = sources[0]
        key = (
            extra,
            tuple(s._version for s in sources),
            first.device,
            first.dtype,
            torch.is_inference_mode_enabled(),
        )
        if self._value is None or self._key != key:
            self._value, self._key = compute(), key
        return self._value


def _under_autocast(x: torch.Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device autocast does not know (e.g. "meta"): never on
        return False


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in float32 under autocast on every device.

    CUDA's autocast runs layer norm in float32 (a bfloat16 input comes out float32); CPU's
    leaves a bfloat16 input in bfloat16. This follows CUDA's rule everywhere, so that CPU
    measurements of reduced precision stand for CUDA's. Outside autocast, plain ``nn.LayerNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float() if _under_autocast(x) else x)


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a B x C x H x W tensor (in float32 under autocast,
    as :class:`LayerNorm`)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = (
            num_channels  # a Python int, so that a traced graph (ONNX) keeps it constant
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _under_autocast(x):
            x = x.float()
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps
        )
        return x.permute(0, 3, 1, 2)


def sine_position_encoding_2d(
    batch: int,
    height: int,
    width: int,
    num_pos_feats: int,
    temperature: float,
    device: torch.device,
) -> torch.Tensor:
    """DETR-style normalised sine encoding of a H x W grid: B x num_pos_feats x H x W.

    Half the channels encode y, half x; coordinates run 1..H (1..W) scaled to (0, 2*pi].
    """
    half = num_pos_feats // 2
    eps = 1e-6
    scale = 2 * torch.pi
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    ys = ys / (ys[-1] + eps) * scale
    xs = xs / (xs[-1] + eps) * scale
    k = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)

    def encode(values: torch.Tensor) -> torch.Tensor:
        angles = values[:, None] / dim_t  # N x half
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    enc_y = encode(ys)[:, None, :].expand(height, width, half)
    enc_x = encode(xs)[None, :, :].expand(height, width, half)
    pos = torch.cat((enc_y, enc_x), dim=2).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(batch, -1, -1, -1)


class PositionEmbeddingSine(nn.Module):
    """Sine position encoding of a feature map (no parameters)."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        key = (h, w, x.device)
        if key not in self._cache:
            self._cache[key] = sine_position_encoding_2d(
                1, h, w, self.num_pos_feats, self.temperature, x.device
            ).contiguous()
        return self._cache[key].expand(b, -1, -1, -1).to(x.dtype)


def sine_encoding_1d(
    positions: torch.Tensor, dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """Sine/cosine encoding of scalar positions: N -> N x dim (sines first, then cosines)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention on B x heads x L x d tensors; ``mask`` (broadcastable to
    B x heads x Lq x Lk) is True where keys count, None when every key does.

    The inputs are arranged so that CUDA's fused kernels (flash, memory-efficient) accept them
    rather than falling back to the math kernel, which materialises the Lq x Lk score matrix:
    q, k, v contiguous (an expanded query has batch stride 0), and a boolean mask given as an
    additive mask of the query's dtype (0 where keys count, -inf elsewhere: the same result).
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~mask, float("-inf")
        )
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
