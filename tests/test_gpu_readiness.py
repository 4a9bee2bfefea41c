"""GPU readiness on CPU terms: RoPE in real arithmetic (compilable without complex kernels),
attention inputs arranged for CUDA's fused kernels, the bfloat16 autocast policy; plus the
``gpu``-marked checks that need a CUDA device (skipped without one)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam2_core.modeling import common
from sam2_core.modeling.common import attention
from sam2_core.modeling.transformer import RoPEAttention, axial_rope_angles, rotate

# --- RoPE --------------------------------------------------------------------------------------


def _complex_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """The complex-number form of RoPE (channel pairs as complex numbers times exp(i*angle))."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def _rope_layer(rope_k_repeat: bool = True) -> RoPEAttention:
    torch.manual_seed(0)
    return RoPEAttention(32, 1, kv_in_dim=16, feat_sizes=(4, 4), rope_k_repeat=rope_k_repeat).eval()


def test_rope_rotation_equals_the_complex_number_form():
    angles = axial_rope_angles(32, 4, 4, 10000.0)
    layer = _rope_layer()
    x = torch.randn(3, 2, 16, 32)
    assert torch.allclose(
        rotate(x, layer._frequencies(16, x.device)), _complex_rotate(x, angles), atol=1e-6, rtol=0
    )
    # another square grid than the configured one
    angles8 = axial_rope_angles(32, 8, 8, 10000.0)
    x8 = torch.randn(1, 1, 64, 32)
    assert torch.allclose(
        rotate(x8, layer._frequencies(64, x8.device)),
        _complex_rotate(x8, angles8),
        atol=1e-6,
        rtol=0,
    )


def test_rope_attention_repeats_key_rotations_per_memory_frame_and_skips_pointer_tokens():
    layer = _rope_layer()
    q, mem = torch.randn(1, 16, 32), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        out = layer(q, mem, mem, num_k_exclude_rope=4)
        # by hand, with the complex form: each of the 3 frames rotated like the queries, pointers not
        angles = axial_rope_angles(32, 4, 4, 10000.0)
        qh = _complex_rotate(layer._heads(layer.q_proj(q)), angles).expand(2, -1, -1, -1)
        kh = layer._heads(layer.k_proj(mem))
        kh = torch.cat([_complex_rotate(kh[:, :, :48], angles.repeat(3, 1)), kh[:, :, 48:]], dim=2)
        expected = layer.out_proj(
            layer._merge(F.scaled_dot_product_attention(qh, kh, layer._heads(layer.v_proj(mem))))
        )
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="do not tile"):
        _rope_layer(rope_k_repeat=False)(q, mem, mem, num_k_exclude_rope=4)


class _KeysWithPointers(torch.nn.Module):
    def __init__(self, layer: RoPEAttention):
        super().__init__()
        self.layer = layer

    def forward(self, q: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        return self.layer(q, mem, mem, num_k_exclude_rope=4)


def test_rope_is_real_arithmetic_while_tracing_and_complex_in_eager_with_the_same_numbers():
    layer = _rope_layer()
    q, mem = torch.randn(1, 16, 32), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        eager = layer(q, mem, mem, num_k_exclude_rope=4)
        traced = torch.jit.trace(_KeysWithPointers(layer), (q, mem))
        assert torch.allclose(traced(q, mem), eager, atol=1e-6, rtol=0)
    assert "complex" not in str(traced.graph)  # what ONNX and Inductor get
    # eager: the keys are written into one tensor without grad, joined by cat with it; same numbers
    with torch.enable_grad():
        mem.requires_grad_(True)
        with_grad = layer(q, mem, mem, num_k_exclude_rope=4)
        with_grad.sum().backward()
    assert torch.allclose(with_grad.detach(), eager, atol=1e-6, rtol=0)
    assert mem.grad is not None and mem.grad.abs().sum() > 0


def test_rope_tables_are_buffers_left_out_of_the_state_dict():
    layer = _rope_layer()
    assert layer.rope_cos.shape == layer.rope_sin.shape == (16, 16)
    assert not any(k.startswith("rope_") for k in layer.state_dict())


@pytest.mark.slow
def test_compiled_rope_attention_has_one_graph_without_complex_tensors():
    """torch.compile sees the whole RoPE attention as one graph with no complex-valued tensor
    (Inductor generates no code for complex operators and falls back to eager kernels)."""
    import torch._dynamo

    layer = _rope_layer()
    q, mem = torch.randn(1, 16, 32), torch.randn(2, 2 * 16 + 4, 16)
    mask = torch.ones(2, mem.shape[1], dtype=torch.bool)
    mask[1, 16:32] = False

    def run(q, mem, mask):
        return layer(q, mem, mem, num_k_exclude_rope=4, key_mask=mask)

    torch._dynamo.reset()
    explained = torch._dynamo.explain(run)(q, mem, mask)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    dtypes = {
        node.meta["example_value"].dtype
        for graph in explained.graphs
        for node in graph.graph.nodes
        if isinstance(node.meta.get("example_value"), torch.Tensor)
    }
    assert not any(d.is_complex for d in dtypes), dtypes

    torch._dynamo.reset()
    compiled = torch.compile(run, backend="inductor", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(q, mem, mask), run(q, mem, mask), atol=1e-5, rtol=0)


# --- attention inputs --------------------------------------------------------------------------


def _recorded_sdpa_inputs(monkeypatch) -> list[dict]:
    seen: list[dict] = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, **kwargs):
        seen.append({"q": q, "k": k, "v": v, "mask": attn_mask})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, **kwargs)

    monkeypatch.setattr(common.F, "scaled_dot_product_attention", spy)
    return seen


def test_attention_gives_fused_kernels_contiguous_inputs_and_an_additive_mask(monkeypatch):
    seen = _recorded_sdpa_inputs(monkeypatch)
    q = torch.randn(1, 1, 16, 32).expand(3, -1, -1, -1)  # one query set shared by 3 memories
    k, v = torch.randn(3, 1, 40, 32), torch.randn(3, 1, 40, 32)
    keep = torch.ones(3, 40, dtype=torch.bool)
    keep[2, 30:] = False
    attention(q, k, v, mask=keep[:, None, None, :])
    attention(q, k, v)
    masked, plain = seen
    for call in seen:
        assert all(call[n].is_contiguous() and 0 not in call[n].stride() for n in ("q", "k", "v"))
    assert masked["mask"].dtype == q.dtype and masked["mask"].shape == (3, 1, 1, 40)
    assert torch.equal(masked["mask"] == 0, keep[:, None, None, :])
    assert plain["mask"] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_outputs_are_unchanged_with_and_without_padding(dtype):
    torch.manual_seed(1)
    q = torch.randn(1, 2, 16, 32, dtype=dtype).expand(3, -1, -1, -1)
    k, v = torch.randn(3, 2, 40, 32, dtype=dtype), torch.randn(3, 2, 40, 32, dtype=dtype)
    keep = torch.ones(3, 40, dtype=torch.bool)
    keep[1, 25:] = False
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    for mask in (keep[:, None, None, :], None):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.allclose(
            attention(q, k, v, mask=mask).float(), expected.float(), atol=tol, rtol=0
        )
    # padding really is ignored: object 1 with its padded keys dropped gives the same output
    alone = F.scaled_dot_product_attention(q[1:2], k[1:2, :, :25], v[1:2, :, :25])
    assert torch.allclose(
        attention(q, k, v, mask=keep[:, None, None, :])[1:2].float(),
        alone.float(),
        atol=tol,
        rtol=0,
    )


# --- CUDA (gpu marker) -------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tracker_shapes(batch: int, padded: bool, dtype: torch.dtype):
    """Memory cross-attention of the official models at 1024: 64 x 64 queries, one head of 256,
    seven 64 x 64 spatial memories plus 16 object pointers of 4 tokens (mem_dim 64)."""
    dev = torch.device("cuda")
    q = torch.randn(1, 1, 4096, 256, device=dev, dtype=dtype).expand(batch, -1, -1, -1)
    k = torch.randn(batch, 1, 7 * 4096 + 64, 256, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    mask = None
    if padded:
        mask = torch.ones(batch, k.shape[2], dtype=torch.bool, device=dev)
        mask[-1, 6 * 4096 :] = False
        mask = mask[:, None, None, :]
    return q, k, v, mask


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_tracker_attention_runs_on_a_fused_cuda_kernel(padded, dtype):
    """Restricted to the flash and memory-efficient kernels, the tracker's attention must run
    (the math kernel, which materialises the score matrix, is not allowed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, mask = _tracker_shapes(batch=4, padded=padded, dtype=dtype)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = attention(q, k, v, mask=mask)
    torch.cuda.synchronize()
    assert out.shape == q.shape and torch.isfinite(out).all()
    with sdpa_kernel([SDPBackend.MATH]):
        reference = attention(q[:1], k[:1], v[:1], mask=None if mask is None else mask[:1])
    assert torch.allclose(
        out[:1].float(), reference.float(), atol=2e-2 if dtype == torch.bfloat16 else 1e-4
    )


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bf16_attention", [False, True], ids=["default", "bf16-attention"])
def test_memory_attention_under_bf16_autocast_runs_on_a_fused_cuda_kernel(bf16_attention):
    """The whole memory-attention module of a tracked frame, under the tracker's autocast,
    restricted to fused kernels: with the default policy (attention in float32, the
    memory-efficient kernel) and with its attentions in bf16 too."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sam2_core import resolve_config
    from sam2_core.modeling.memory import MemoryAttention

    cfg = resolve_config("sam2.1_hiera_tiny")
    module = MemoryAttention(cfg.memory_attention).cuda().eval()
    for layer in module.layers:
        layer.keep_self_attention_float32 = layer.keep_cross_attention_float32 = not bf16_attention
    d, mem = cfg.memory_attention.d_model, cfg.mem_dim
    cur = torch.randn(1, 4096, d, device="cuda")
    memory = torch.randn(2, 7 * 4096 + 64, mem, device="cuda")
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=torch.bfloat16),
        sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
    ):
        out = module(cur, torch.randn_like(cur), memory, torch.randn_like(memory), 64, None)
    assert out.shape == (2, 4096, d) and torch.isfinite(out).all()


# --- bfloat16 policy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_a_model(mini_a_dir):
    from sam2_core.parity import load_case_model

    return load_case_model(mini_a_dir)


def test_default_policy_lets_only_memory_attentions_feed_forward_into_bf16(mini_a_model):
    from sam2_core.modeling.precision import autocast_parts, set_autocast_parts

    default = {"memory_attention.feed_forward"}
    assert autocast_parts(mini_a_model) == default
    set_autocast_parts(mini_a_model, ["mask_decoder", "image_encoder"])
    try:
        assert autocast_parts(mini_a_model) == {"mask_decoder", "image_encoder"}
        assert mini_a_model.memory_attention.keep_float32  # no part of it chosen: an island
        set_autocast_parts(mini_a_model, ["memory_attention"])  # a group: its three parts
        assert autocast_parts(mini_a_model) == {
            "memory_attention.self_attention",
            "memory_attention.cross_attention",
            "memory_attention.feed_forward",
        }
        with pytest.raises(ValueError, match="unknown autocast part.*'decoder'"):
            set_autocast_parts(mini_a_model, ["decoder"])
    finally:
        set_autocast_parts(mini_a_model, default)
    assert autocast_parts(mini_a_model) == default


def test_layer_norms_run_in_float32_under_cpu_autocast_as_under_cuda():
    """CPU autocast leaves a bf16 layer norm in bf16; CUDA's computes it in float32. Ours
    follow CUDA's rule on every device, and are plain layer norms outside autocast."""
    from sam2_core.modeling.common import LayerNorm, LayerNorm2d

    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4)
    norm, norm2d = LayerNorm(8, eps=1e-6), LayerNorm2d(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm2d.weight.copy_(norm.weight)
        tokens = x.flatten(2).transpose(1, 2)  # B x HW x C
        plain = norm(tokens)
        assert torch.equal(
            plain, torch.nn.functional.layer_norm(tokens, (8,), norm.weight, eps=1e-6)
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.nn.LayerNorm(8)(tokens.bfloat16()).dtype == torch.bfloat16  # CPU's rule
            ours, ours2d = norm(tokens.bfloat16()), norm2d(x.bfloat16())
    assert ours.dtype == ours2d.dtype == torch.float32
    with torch.no_grad():
        expected = torch.nn.functional.layer_norm(
            tokens.bfloat16().float(), (8,), norm.weight, eps=1e-6
        )
    assert torch.equal(ours, expected)
    assert torch.allclose(ours2d, expected.transpose(1, 2).reshape(x.shape), atol=1e-6)


def test_mask_heads_run_in_float32_under_autocast(mini_a_model):
    """Under bf16 autocast the prompt encoder and mask decoder give their float32 results."""
    torch.manual_seed(0)
    model = mini_a_model
    h = model.cfg.feat_size
    pix = torch.randn(2, model.cfg.hidden_dim, h, h)
    high = [
        torch.randn(2, model.cfg.hidden_dim // 8, 4 * h, 4 * h),
        torch.randn(2, model.cfg.hidden_dim // 4, 2 * h, 2 * h),
    ]
    coords, labels = torch.rand(2, 2, 2) * model.image_size, torch.ones(2, 2, dtype=torch.int32)
    with torch.inference_mode():
        plain = model.sam_heads(pix, high, coords, labels, None, multimask=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            islands = model.sam_heads(
                pix.bfloat16(), [x.bfloat16() for x in high], coords, labels, None, multimask=True
            )
    for name in ("multimasks", "ious", "obj_ptr", "object_score_logits"):
        ours, ref = getattr(islands, name), getattr(plain, name)
        assert ours.dtype == torch.float32, name
        # the only difference left: the inputs were handed over rounded to bfloat16
        assert torch.allclose(ours, ref, atol=0.05 * float(ref.abs().max()) + 1e-3), name


@pytest.mark.parametrize("case, masks", [("video", 75), ("long", 240)])
def test_default_bf16_policy_keeps_masks_and_presence_on_the_recorded_cases(
    mini_a_dir, mini_a_model, one_torch_thread, case, masks
):
    """bf16 autocast with the default policy against the recorded float32 outputs: mean mask
    IoU >= 0.99 and no object judged present in one and absent in the other. With the whole of
    memory attention in bf16 (the previous default) the same check fails on the long case
    (mean 0.87, 28 flips), and with every part on both, so it has teeth."""
    from benchmarks.bench_dtype import case_agreement
    from sam2_core.modeling.precision import AUTOCAST_PARTS, autocast_parts, set_autocast_parts
    from sam2_core.tracker import TrackerOptions

    options = TrackerOptions(autocast_dtype=torch.bfloat16)
    default = autocast_parts(mini_a_model)
    ours = case_agreement(mini_a_dir, case, mini_a_model, options)
    assert ours["masks"] == masks
    assert ours["mean_iou"] >= 0.99 and ours["presence_flips"] == 0, ours
    worse = ["memory_attention"] if case == "long" else list(AUTOCAST_PARTS)
    set_autocast_parts(mini_a_model, worse)
    try:
        other = case_agreement(mini_a_dir, case, mini_a_model, options)
    finally:
        set_autocast_parts(mini_a_model, default)
    assert other["mean_iou"] < 0.9 and other["presence_flips"] > 0, other


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_script_refuses_clearly_without_cuda(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(
        [str(script), str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no CUDA device" in done.stderr
    assert json.loads((tmp_path / "env.json").read_text())["cuda_available"] is False
