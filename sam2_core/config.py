"""Model configuration: frozen dataclasses, the eight official models by name,
and a reader that maps an official config tree (YAML or ``resolved`` JSON) onto them.

The official configs are Hydra trees whose nodes carry ``_target_`` class
paths. We read them as plain data: each node's keys are mapped onto one of
the dataclasses below, and any key we do not understand is refused, so a
config that asks for behaviour we do not implement never loads silently.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .hub import OFFICIAL_CHECKPOINTS, official_checkpoint


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


# ---------------------------------------------------------------------------
# Reading an official config tree
# ---------------------------------------------------------------------------

class ConfigError(ValueError):
    """An official-style config that cannot be mapped onto ModelConfig."""


# Keys that configure things we deliberately do not model (compilation, the
# training-only options that have no effect at inference, class paths).
_IGNORED_KEYS = {
    "_target_",
    "compile_image_encoder",
    "use_act_ckpt_iterative_pt_sampling",
    "memory_attention.batch_first",
    "image_encoder.trunk.return_interm_layers",
    "sam_mask_decoder_extra_args",
}

_TOP_LEVEL_TRACKING = {f.name for f in fields(TrackingConfig)}
_TOP_LEVEL_DECODER = {
    "use_high_res_features_in_sam": "use_high_res_features",
    "iou_prediction_use_sigmoid": "iou_prediction_use_sigmoid",
    "pred_obj_scores": "pred_obj_scores",
    "pred_obj_scores_mlp": "pred_obj_scores_mlp",
    "use_multimask_token_for_obj_ptr": "use_multimask_token_for_obj_ptr",
}


class _Reader:
    """Consumes a nested dict key by key and reports leftovers with their paths."""

    def __init__(self, tree: dict, path: str = ""):
        if not isinstance(tree, dict):
            raise ConfigError(f"config node {path or '<root>'} must be a mapping, got {type(tree).__name__}")
        self.tree = dict(tree)
        self.path = path
        self.children: list[_Reader] = []

    def take(self, key: str, default: Any = None) -> Any:
        return self.tree.pop(key, default)

    def child(self, key: str) -> _Reader:
        node = self.take(key)
        if node is None:
            raise ConfigError(f"config is missing the node {self._join(key)}")
        reader = _Reader(node, self._join(key))
        self.children.append(reader)
        return reader

    def _join(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def leftovers(self) -> list[str]:
        out = []
        for key in self.tree:
            full = self._join(key)
            if key == "_target_" or full in _IGNORED_KEYS:
                continue
            out.append(full)
        for child in self.children:
            out.extend(child.leftovers())
        return out


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fill(cls: type, reader: _Reader, mapping: dict[str, str], base: Any) -> Any:
    """Take the keys in ``mapping`` (tree key -> dataclass field) from ``reader`` into ``base``."""
    updates = {}
    for tree_key, field_name in mapping.items():
        if tree_key in reader.tree:
            updates[field_name] = _tuple(reader.take(tree_key))
    return replace(base, **updates)


def config_from_tree(tree: dict, name: str = "custom") -> ModelConfig:
    """Map an official model config tree (the ``model`` node) onto a ModelConfig.

    Raises ConfigError naming every key it does not understand.
    """
    root = _Reader(copy.deepcopy(tree))
    image_size = int(root.take("image_size", 1024))

    enc = root.child("image_encoder")
    scalp = enc.take("scalp", 1)
    trunk_node = enc.child("trunk")
    trunk = _fill(TrunkConfig, trunk_node, {f.name: f.name for f in fields(TrunkConfig)}, TrunkConfig())
    neck_node = enc.child("neck")
    pos = neck_node.child("position_encoding")
    neck = _fill(
        NeckConfig,
        neck_node,
        {k: k for k in ("d_model", "backbone_channel_list", "fpn_top_down_levels", "fpn_interp_model", "fuse_type")},
        NeckConfig(scalp=int(scalp)),
    )
    neck = replace(neck, num_pos_feats=int(pos.take("num_pos_feats", 256)), temperature=float(pos.take("temperature", 10000)))
    _expect_standard_sine(pos)

    mem_attn = MemoryAttentionConfig()
    if "memory_attention" in root.tree:
        ma = root.child("memory_attention")
        layer = ma.child("layer")
        sa = layer.child("self_attention")
        ca = layer.child("cross_attention")
        mem_attn = replace(
            mem_attn,
            d_model=int(ma.take("d_model", mem_attn.d_model)),
            num_layers=int(ma.take("num_layers", mem_attn.num_layers)),
            pos_enc_at_input=bool(ma.take("pos_enc_at_input", True)),
            dim_feedforward=int(layer.take("dim_feedforward", mem_attn.dim_feedforward)),
            dropout=float(layer.take("dropout", mem_attn.dropout)),
            pos_enc_at_attn=bool(layer.take("pos_enc_at_attn", False)),
            pos_enc_at_cross_attn_keys=bool(layer.take("pos_enc_at_cross_attn_keys", True)),
            pos_enc_at_cross_attn_queries=bool(layer.take("pos_enc_at_cross_attn_queries", False)),
            num_heads=int(ca.take("num_heads", 1)),
            kv_in_dim=int(ca.take("kv_in_dim", mem_attn.kv_in_dim)),
            rope_theta=float(ca.take("rope_theta", 10000.0)),
            feat_sizes=tuple(ca.take("feat_sizes", mem_attn.feat_sizes)),
            rope_k_repeat=bool(ca.take("rope_k_repeat", False)),
        )
        activation = layer.take("activation", "relu")
        layer.take("d_model")
        if activation != "relu":
            raise ConfigError(f"memory_attention.layer.activation={activation!r}: only 'relu' is supported")
        for node in (sa, ca):
            _check_same(node, "embedding_dim", mem_attn.d_model)
            node.take("dropout")
            _check_same(node, "downsample_rate", 1)
        _check_same(sa, "num_heads", mem_attn.num_heads)
        _check_same(sa, "rope_theta", mem_attn.rope_theta)
        _check_same(sa, "feat_sizes", list(mem_attn.feat_sizes))

    mem_enc = MemoryEncoderConfig()
    if "memory_encoder" in root.tree:
        me = root.child("memory_encoder")
        mpos = me.child("position_encoding")
        ds = me.child("mask_downsampler")
        fuser = me.child("fuser")
        cx = fuser.child("layer")
        mem_enc = replace(
            mem_enc,
            out_dim=int(me.take("out_dim", mem_enc.out_dim)),
            in_dim=int(me.take("in_dim", 256)),
            num_pos_feats=int(mpos.take("num_pos_feats", 64)),
            mask_kernel_size=int(ds.take("kernel_size", 4)),
            mask_stride=int(ds.take("stride", 4)),
            mask_padding=int(ds.take("padding", 0)),
            mask_total_stride=int(ds.take("total_stride", 16)),
            mask_embed_dim=int(ds.take("embed_dim", 256)),
            fuser_num_layers=int(fuser.take("num_layers", 2)),
            fuser_dim=int(cx.take("dim", 256)),
            fuser_kernel_size=int(cx.take("kernel_size", 7)),
            fuser_padding=int(cx.take("padding", 3)),
            layer_scale_init_value=float(cx.take("layer_scale_init_value", 1e-6)),
            use_dwconv=bool(cx.take("use_dwconv", True)),
        )
        _expect_standard_sine(mpos)
        _check_same(mpos, "temperature", 10000)
        if fuser.take("input_projection", False):
            raise ConfigError("memory_encoder.fuser.input_projection=true is not supported")

    decoder = _fill(DecoderConfig, root, _TOP_LEVEL_DECODER, DecoderConfig())
    extra = root.tree.get("sam_mask_decoder_extra_args") or {}
    known_extra = {
        "dynamic_multimask_via_stability",
        "dynamic_multimask_stability_delta",
        "dynamic_multimask_stability_thresh",
    }
    unknown_extra = sorted(set(extra) - known_extra)
    if unknown_extra:
        raise ConfigError(f"unsupported sam_mask_decoder_extra_args keys: {unknown_extra}")
    decoder = replace(decoder, **{k: extra[k] for k in known_extra if k in extra})

    tracking = TrackingConfig()
    tracking = replace(tracking, **{k: _tuple(root.take(k)) for k in list(root.tree) if k in _TOP_LEVEL_TRACKING})

    leftovers = root.leftovers()
    if leftovers:
        raise ConfigError(f"config keys not understood: {', '.join(sorted(leftovers))}")

    return ModelConfig(
        name=name,
        image_size=image_size,
        trunk=trunk,
        neck=neck,
        memory_attention=mem_attn,
        memory_encoder=mem_enc,
        decoder=decoder,
        tracking=tracking,
    )


def _check_same(node: _Reader, key: str, expected: Any) -> None:
    if key in node.tree:
        value = node.take(key)
        if value != expected:
            raise ConfigError(f"{node.path}.{key}={value!r} is not supported (expected {expected!r})")


def _expect_standard_sine(node: _Reader) -> None:
    _check_same(node, "normalize", True)
    _check_same(node, "scale", None)


def config_from_document(doc: dict, name: str = "custom") -> ModelConfig:
    """Accept an official YAML document (``{"model": {...}}``), our ``config.json``
    layout (``{"resolved": {...}}``) or a bare model tree."""
    if "resolved" in doc and isinstance(doc["resolved"], dict):
        doc = doc["resolved"]
    if "model" in doc and isinstance(doc["model"], dict) and "image_encoder" not in doc:
        doc = doc["model"]
    return config_from_tree(doc, name=name)


def parse_config_text(text: str, name: str = "custom") -> ModelConfig:
    """Parse YAML or JSON text holding an official-style config."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config {name!r} is neither JSON nor YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"config {name!r} must be a mapping at the top level")
    return config_from_document(doc, name=name)


# ---------------------------------------------------------------------------
# The eight official models
# ---------------------------------------------------------------------------

_TRUNKS = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9], window_pos_embed_bkg_spatial_size=[7, 7]),
    "small": dict(embed_dim=96, num_heads=1, stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13], window_pos_embed_bkg_spatial_size=[7, 7]),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(embed_dim=144, num_heads=2, stages=[2, 6, 36, 4], global_att_blocks=[23, 33, 43], window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 16, 8]),
}

_SAM21_EXTRA = dict(
    no_obj_embed_spatial=True,
    add_tpos_enc_to_obj_ptrs=True,
    proj_tpos_enc_in_obj_ptrs=True,
    use_signed_tpos_enc_to_obj_ptrs=True,
)

OFFICIAL_CONFIG_FILES = {name: entry.config_file for name, entry in OFFICIAL_CHECKPOINTS.items()}


def official_tree(name: str) -> dict:
    """The official config tree (``model`` node) of a named model, as plain data."""
    entry = official_checkpoint(name)
    version, trunk = entry.version, _TRUNKS[entry.variant]
    channels = [trunk["embed_dim"] * m for m in (8, 4, 2, 1)]
    tree = {
        "image_encoder": {
            "scalp": 1,
            "trunk": dict(trunk),
            "neck": {
                "position_encoding": {"num_pos_feats": 256, "normalize": True, "scale": None, "temperature": 10000},
                "d_model": 256,
                "backbone_channel_list": channels,
                "fpn_top_down_levels": [2, 3],
                "fpn_interp_model": "nearest",
            },
        },
        "memory_attention": {
            "d_model": 256,
            "pos_enc_at_input": True,
            "num_layers": 4,
            "layer": {
                "activation": "relu",
                "dim_feedforward": 2048,
                "dropout": 0.1,
                "pos_enc_at_attn": False,
                "d_model": 256,
                "pos_enc_at_cross_attn_keys": True,
                "pos_enc_at_cross_attn_queries": False,
                "self_attention": {"rope_theta": 10000.0, "feat_sizes": [64, 64], "embedding_dim": 256, "num_heads": 1, "downsample_rate": 1, "dropout": 0.1},
                "cross_attention": {"rope_theta": 10000.0, "feat_sizes": [64, 64], "rope_k_repeat": True, "embedding_dim": 256, "num_heads": 1, "downsample_rate": 1, "dropout": 0.1, "kv_in_dim": 64},
            },
        },
        "memory_encoder": {
            "out_dim": 64,
            "position_encoding": {"num_pos_feats": 64, "normalize": True, "scale": None, "temperature": 10000},
            "mask_downsampler": {"kernel_size": 3, "stride": 2, "padding": 1},
            "fuser": {"layer": {"dim": 256, "kernel_size": 7, "padding": 3, "layer_scale_init_value": 1e-6, "use_dwconv": True}, "num_layers": 2},
        },
        "num_maskmem": 7,
        "image_size": 1024,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": True,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
    }
    if version == "sam2.1":
        tree.update(_SAM21_EXTRA)
    return tree


OFFICIAL_MODELS = tuple(sorted(OFFICIAL_CONFIG_FILES))


def official_config(name: str, postprocessing: bool = False) -> ModelConfig:
    """The ModelConfig of an official model (``sam2_hiera_tiny`` ... ``sam2.1_hiera_large``).

    With ``postprocessing``, the settings Meta's builders add by default
    (``build_sam2*(..., apply_postprocessing=True)``): dynamic multimask selection by
    stability, binarised prompt masks for the memory encoder, and filling holes of up to
    8 low-res pixels in video outputs.
    """
    cfg = config_from_tree(official_tree(name), name=name)
    if postprocessing:
        cfg = replace(
            cfg,
            decoder=replace(
                cfg.decoder,
                dynamic_multimask_via_stability=True,
                dynamic_multimask_stability_delta=0.05,
                dynamic_multimask_stability_thresh=0.98,
            ),
            tracking=replace(cfg.tracking, binarize_mask_from_pts_for_mem_enc=True, fill_hole_area=8),
        )
    return cfg
