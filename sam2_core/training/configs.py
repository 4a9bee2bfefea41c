"""Small SAM 2.1-architecture config trees for training from scratch (e.g. the demo model).

The tree has the layout of the official configs (``config_from_tree`` reads it, and it is what
``config.json`` stores under ``resolved``): SAM 2.1's tracking options, with the image trunk,
hidden width, memory width and memory-attention depth scaled down.
"""

from __future__ import annotations

from ..config_tree import official_tree


def small_tree(
    image_size: int = 128,
    embed_dim: int = 16,
    hidden_dim: int = 64,
    mem_dim: int = 16,
    attention_layers: int = 2,
    stages: tuple[int, int, int, int] = (1, 2, 3, 1),
    dropout: float = 0.0,
    multimask: bool = True,
) -> dict:
    """An official-style SAM 2.1 model tree of the given sizes.

    image_size must be a multiple of 64 (the trunk's last stage is image_size / 32 wide and
    windows must tile it); hidden_dim a multiple of mem_dim and of 8. ``multimask=False``
    makes the decoder always give its single mask (no multimask candidates, no stability
    fallback): simpler to train from scratch, where the three candidate masks and the IoU head
    that picks among them tend to collapse.
    """
    if image_size % 64 or image_size < 64:
        raise ValueError(f"image_size must be a positive multiple of 64, got {image_size}")
    if hidden_dim % 8 or hidden_dim % mem_dim:
        raise ValueError(
            f"hidden_dim ({hidden_dim}) must be a multiple of 8 and of mem_dim ({mem_dim})"
        )
    fs = image_size // 16
    blocks = sum(stages)
    tree = official_tree("sam2.1_hiera_tiny")
    tree["image_size"] = image_size
    tree["image_encoder"]["trunk"] = {
        "embed_dim": embed_dim,
        "num_heads": 1,
        "stages": list(stages),
        "global_att_blocks": [stages[0] + stages[1] + stages[2] // 2, blocks - 1],
        "window_spec": [8, 4, min(fs, 14), max(min(fs // 2, 7), 1)],
        "window_pos_embed_bkg_spatial_size": [4, 4],
    }
    neck = tree["image_encoder"]["neck"]
    neck["d_model"] = hidden_dim
    neck["position_encoding"]["num_pos_feats"] = hidden_dim
    neck["backbone_channel_list"] = [embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim]
    ma = tree["memory_attention"]
    ma["d_model"] = hidden_dim
    ma["num_layers"] = attention_layers
    layer = ma["layer"]
    layer["d_model"] = hidden_dim
    layer["dim_feedforward"] = 2 * hidden_dim
    layer["dropout"] = dropout
    for key in ("self_attention", "cross_attention"):
        layer[key]["embedding_dim"] = hidden_dim
        layer[key]["feat_sizes"] = [fs, fs]
        layer[key]["dropout"] = dropout
    layer["cross_attention"]["kv_in_dim"] = mem_dim
    me = tree["memory_encoder"]
    me["out_dim"] = mem_dim
    me["in_dim"] = hidden_dim
    me["position_encoding"]["num_pos_feats"] = mem_dim
    me["mask_downsampler"]["embed_dim"] = hidden_dim
    me["fuser"]["layer"]["dim"] = hidden_dim
    tree.update(
        {
            "add_all_frames_to_correct_as_cond": True,
            "sam_mask_decoder_extra_args": {
                "dynamic_multimask_via_stability": multimask,
                "dynamic_multimask_stability_delta": 0.05,
                "dynamic_multimask_stability_thresh": 0.98,
            },
            "binarize_mask_from_pts_for_mem_enc": True,
            "multimask_output_in_sam": multimask,
            "multimask_output_for_tracking": multimask,
        }
    )
    return tree
