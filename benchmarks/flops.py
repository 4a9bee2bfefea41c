"""Matmul and convolution FLOPs of one tracked frame, and the frames/s a GPU's peak would allow.

A tracked frame costs the image encoder once, then per object: memory
attention over ``num_maskmem`` spatial memories plus the object-pointer
tokens (the steady state, once the memory window is full), the mask decoder
and the memory encoder. Each part is run once on the meta device (shapes
only, nothing computed or allocated) under ``torch.utils.flop_counter``, which
counts matrix products, convolutions and attention; elementwise work is left
out. One multiply-add counts as two FLOPs.

The roofline figures divide a GPU's published dense bf16 peak by the FLOPs
of a frame: bounds no implementation reaches, not measurements.

    python -m benchmarks.flops --models sam2.1_hiera_tiny,sam2.1_hiera_large --objects 1,16 --json out.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    add_common_arguments,
    environment,
    int_list,
    print_table,
    report,
    run_cli,
)

# Published dense (no sparsity) bf16 tensor-core peaks, TFLOP/s (NVIDIA data sheets).
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "A100": 312.0,
}


def _count(fn) -> tuple[int, object, dict]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), out, by_op


def tracking_flops(model: str, objects: int, image_size: int | None = None) -> dict:
    """FLOPs of one steady-state tracked frame of ``model`` with ``objects`` objects.

    Returns the parts (image_encoder once; memory_attention, mask_decoder, memory_encoder for
    all objects together), their per-object values, total and the memory layout counted.
    """
    from sam2_core.build import build_meta, resolve_config

    cfg = resolve_config(model)
    if image_size is not None:
        cfg = replace(cfg, image_size=int(image_size))
    if objects < 1:
        raise ValueError(f"objects must be >= 1, got {objects}")
    net = build_meta(cfg).eval()
    t = cfg.tracking
    mem_dim, hidden = cfg.mem_dim, cfg.hidden_dim
    split = hidden // mem_dim if mem_dim < hidden else 1
    side = cfg.feat_size
    hw = side * side
    n_spatial = t.num_maskmem
    n_ptrs = t.max_obj_ptrs_in_encoder if t.use_obj_ptrs_in_encoder else 0
    ptr_tokens = n_ptrs * split
    with torch.inference_mode():
        image = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device="meta")
        enc, feats, enc_ops = _count(lambda: net.encode_image(image))
        batch = feats.expand(objects)
        memory = torch.zeros(objects, n_spatial * hw + ptr_tokens, mem_dim, device="meta")
        # As the tracker calls it: the frame once (batch 1), so the first self-attention,
        # which sees no memory, is shared by all objects.
        attn, pix, attn_ops = _count(
            lambda: net.condition_on_memory(
                feats, memory, torch.zeros_like(memory), ptr_tokens, None
            )
        )
        multimask = t.multimask_output_in_sam and t.multimask_output_for_tracking
        dec, heads, dec_ops = _count(
            lambda: net.sam_heads(pix, batch.high_res, None, None, None, multimask=multimask)
        )
        menc, _, menc_ops = _count(
            lambda: net.encode_memory(
                feats.embedding, heads.high_res, heads.object_score_logits, binarize=False
            )
        )
    per_object = {
        "memory_attention": attn / objects,
        "mask_decoder": dec / objects,
        "memory_encoder": menc / objects,
    }
    total = enc + attn + dec + menc
    return {
        "model": model if isinstance(model, str) else cfg.name,
        "image_size": cfg.image_size,
        "objects": objects,
        "memory_frames": n_spatial,
        "memory_tokens_per_frame": hw,
        "object_pointer_tokens": ptr_tokens,
        "flops": {
            "image_encoder": enc,
            "memory_attention": attn,
            "mask_decoder": dec,
            "memory_encoder": menc,
            "total": total,
        },
        "flops_per_object": per_object,
        "ops": {
            "image_encoder": enc_ops,
            "memory_attention": attn_ops,
            "mask_decoder": dec_ops,
            "memory_encoder": menc_ops,
        },
    }


def memory_attention_estimate(model: str, image_size: int | None = None, objects: int = 1) -> float:
    """Hand count of the memory-attention FLOPs per object when ``objects`` share a frame
    (attention products, projections, MLP), to check the counter: per layer, self-attention
    over the frame's tokens, then cross-attention from them to every memory token; the first
    layer's self-attention (and its cross-attention's queries) see only the frame, so they run
    once for all the objects."""
    from sam2_core.build import resolve_config

    cfg = resolve_config(model)
    if image_size is not None:
        cfg = replace(cfg, image_size=int(image_size))
    a = cfg.memory_attention
    t = cfg.tracking
    n = cfg.feat_size**2
    split = cfg.hidden_dim // cfg.mem_dim if cfg.mem_dim < cfg.hidden_dim else 1
    m = t.num_maskmem * n + t.max_obj_ptrs_in_encoder * split
    d, kv = a.d_model, a.kv_in_dim
    self_attn = 2 * (4 * n * d * d) + 2 * (2 * n * n * d)
    cross = 2 * (2 * n * d * d + 2 * m * kv * d) + 2 * (2 * n * m * d)
    mlp = 2 * (2 * n * d * a.dim_feedforward)
    alone = a.num_layers * (self_attn + cross + mlp)
    shared = self_attn + 2 * n * d * d  # and the query projection of the first cross-attention
    return float(alone - shared * (objects - 1) / objects)


def roofline(flops_per_frame: float) -> dict:
    """frames/s each GPU's dense bf16 peak would allow (an upper bound, not a measurement)."""
    return {gpu: peak * 1e12 / flops_per_frame for gpu, peak in PEAK_BF16_TFLOPS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.flops", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--models",
        default="sam2.1_hiera_tiny,sam2.1_hiera_large",
        help="comma-separated names or config paths",
    )
    p.add_argument("--objects", type=int_list, default=[1, 16], help="object counts (default 1,16)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="model input size override (default: the model's own)",
    )
    add_common_arguments(p)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        p.error("--models needs at least one model")
    return args


def run(args: argparse.Namespace) -> dict:
    env = environment()  # before the work: the load average then is what the run met
    results = []
    for model in args.models:
        for n in args.objects:
            r = tracking_flops(model, n, args.image_size)
            r["memory_attention_hand_count_per_object"] = memory_attention_estimate(
                model, args.image_size, n
            )
            r["roofline_frames_per_s"] = roofline(r["flops"]["total"])
            results.append(r)
    settings = {
        "models": args.models,
        "objects": args.objects,
        "image_size": args.image_size,
        "counted": "torch.utils.flop_counter on the meta device: matmul, conv, attention; 1 MAC = 2 FLOPs",
        "state": "steady state: num_maskmem spatial memories and max_obj_ptrs_in_encoder object pointers",
        "peak_bf16_tflops": PEAK_BF16_TFLOPS,
        "roofline_note": "frames/s at the published dense bf16 peak: upper bounds, not measurements",
    }
    return report("flops", settings, {"results": results}, env)


def print_report(doc: dict) -> None:
    rows = []
    gpus = list(doc["settings"]["peak_bf16_tflops"])
    for r in doc["figures"]["results"]:
        f = r["flops"]
        rows.append(
            [
                r["model"],
                r["image_size"],
                r["objects"],
                f["image_encoder"] / 1e9,
                r["flops_per_object"]["memory_attention"] / 1e9,
                (r["flops_per_object"]["mask_decoder"] + r["flops_per_object"]["memory_encoder"])
                / 1e9,
                f["total"] / 1e12,
                *(r["roofline_frames_per_s"][g] for g in gpus),
            ]
        )
    headers = [
        "model",
        "size",
        "objects",
        "encoder GF",
        "mem-attn GF/obj",
        "dec+memenc GF/obj",
        "total TF/frame",
        *(f"{g} fps bound" for g in gpus),
    ]
    print_table(
        headers, rows, "FLOPs per tracked frame (steady state); frames/s at bf16 peak are bounds"
    )


def main(argv: list[str] | None = None) -> dict:
    return run_cli(parse_args(argv), run, print_report)


if __name__ == "__main__":
    main()
