"""Model configuration: the frozen dataclasses that describe a SAM 2 model, one per part.

Their defaults are the only place defaults are written. Official config trees (YAML or
``resolved`` JSON) and the eight official models by name are read onto them by
:mod:`sam2_core.config_tree`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrunkConfig:
    """Hiera image trunk."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0


@dataclass(frozen=True)
class NeckConfig:
    """FPN neck and the sine position encoding of its outputs."""

    d_model: int = 256
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    fuse_type: str = "sum"
    num_pos_feats: int = 256
    temperature: float = 10000.0
    scalp: int = 1


@dataclass(frozen=True)
class MemoryAttentionConfig:
    """Memory attention: self-attention over the frame, cross-attention to memory (both RoPE)."""

    d_model: int = 256
    num_layers: int = 4
    dim_feedforward: int = 2048
    num_heads: int = 1
    kv_in_dim: int = 64
    rope_theta: float = 10000.0
    feat_sizes: tuple[int, int] = (64, 64)
    rope_k_repeat: bool = True
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    dropout: float = 0.1


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """Memory encoder: mask downsampler, fuser (ConvNeXt blocks), projection."""

    in_dim: int = 256
    out_dim: int = 64
    num_pos_feats: int = 64
    mask_kernel_size: int = 3
    mask_stride: int = 2
    mask_padding: int = 1
    mask_total_stride: int = 16
    mask_embed_dim: int = 256
    fuser_dim: int = 256
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_num_layers: int = 2
    layer_scale_init_value: float = 1e-6
    use_dwconv: bool = True


@dataclass(frozen=True)
class DecoderConfig:
    """Prompt encoder and mask decoder settings."""

    use_high_res_features: bool = True
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class TrackingConfig:
    """How memory is written and read when tracking through a video."""

    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = False
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    max_cond_frames_in_attn: int = -1
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    add_all_frames_to_correct_as_cond: bool = False
    fill_hole_area: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """A whole SAM 2 model."""

    name: str = "custom"
    image_size: int = 1024
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    memory_attention: MemoryAttentionConfig = field(default_factory=MemoryAttentionConfig)
    memory_encoder: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def hidden_dim(self) -> int:
        return self.neck.d_model

    @property
    def mem_dim(self) -> int:
        return self.memory_encoder.out_dim

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def feat_size(self) -> int:
        """Side of the lowest-resolution feature map (64 at image size 1024)."""
        return self.image_size // self.backbone_stride
