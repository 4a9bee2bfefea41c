"""Official config trees read onto :class:`~sam2_core.config.ModelConfig`, and the eight official
models by name.

The official configs are Hydra trees whose nodes carry ``_target_`` class
paths. We read them as plain data: each node's keys are mapped onto one of
the dataclasses of :mod:`sam2_core.config`, and any key we do not understand is
refused, so a config that asks for behaviour we do not implement never loads silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from .config import ModelConfig, TrackingConfig, TrunkConfig
from .official import OFFICIAL_CHECKPOINTS, official_checkpoint


class ConfigError(ValueError):
    """An official-style config that cannot be mapped onto ModelConfig."""


# The mappings of an official tree (the ``model`` node). A node marked True must be present when
# its parent is (the root always is); the others may be left out.
_NODES: dict[str, bool] = {
    "image_encoder": True,
    "image_encoder.trunk": True,
    "image_encoder.neck": True,
    "image_encoder.neck.position_encoding": True,
    "memory_attention": False,
    "memory_attention.layer": True,
    "memory_attention.layer.self_attention": True,
    "memory_attention.layer.cross_attention": True,
    "memory_encoder": False,
    "memory_encoder.position_encoding": True,
    "memory_encoder.mask_downsampler": True,
    "memory_encoder.fuser": True,
    "memory_encoder.fuser.layer": True,
    "sam_mask_decoder_extra_args": False,
}

# Where each ModelConfig field is set: dotted path in the tree -> "section.field". A key a tree
# leaves out keeps the dataclass default in sam2_core.config, which is the only place defaults are written.
_FIELD_PATHS: dict[str, str] = {
    "image_size": "image_size",
    "image_encoder.scalp": "neck.scalp",
    **{f"image_encoder.trunk.{f.name}": f"trunk.{f.name}" for f in fields(TrunkConfig)},
    "image_encoder.neck.d_model": "neck.d_model",
    "image_encoder.neck.backbone_channel_list": "neck.backbone_channel_list",
    "image_encoder.neck.fpn_top_down_levels": "neck.fpn_top_down_levels",
    "image_encoder.neck.fpn_interp_model": "neck.fpn_interp_model",
    "image_encoder.neck.fuse_type": "neck.fuse_type",
    "image_encoder.neck.position_encoding.num_pos_feats": "neck.num_pos_feats",
    "image_encoder.neck.position_encoding.temperature": "neck.temperature",
    "memory_attention.d_model": "memory_attention.d_model",
    "memory_attention.num_layers": "memory_attention.num_layers",
    "memory_attention.pos_enc_at_input": "memory_attention.pos_enc_at_input",
    "memory_attention.layer.dim_feedforward": "memory_attention.dim_feedforward",
    "memory_attention.layer.dropout": "memory_attention.dropout",
    "memory_attention.layer.pos_enc_at_attn": "memory_attention.pos_enc_at_attn",
    "memory_attention.layer.pos_enc_at_cross_attn_keys": "memory_attention.pos_enc_at_cross_attn_keys",
    "memory_attention.layer.pos_enc_at_cross_attn_queries": "memory_attention.pos_enc_at_cross_attn_queries",
    "memory_attention.layer.cross_attention.num_heads": "memory_attention.num_heads",
    "memory_attention.layer.cross_attention.kv_in_dim": "memory_attention.kv_in_dim",
    "memory_attention.layer.cross_attention.rope_theta": "memory_attention.rope_theta",
    "memory_attention.layer.cross_attention.feat_sizes": "memory_attention.feat_sizes",
    "memory_attention.layer.cross_attention.rope_k_repeat": "memory_attention.rope_k_repeat",
    "memory_encoder.in_dim": "memory_encoder.in_dim",
    "memory_encoder.out_dim": "memory_encoder.out_dim",
    "memory_encoder.position_encoding.num_pos_feats": "memory_encoder.num_pos_feats",
    "memory_encoder.mask_downsampler.kernel_size": "memory_encoder.mask_kernel_size",
    "memory_encoder.mask_downsampler.stride": "memory_encoder.mask_stride",
    "memory_encoder.mask_downsampler.padding": "memory_encoder.mask_padding",
    "memory_encoder.mask_downsampler.total_stride": "memory_encoder.mask_total_stride",
    "memory_encoder.mask_downsampler.embed_dim": "memory_encoder.mask_embed_dim",
    "memory_encoder.fuser.num_layers": "memory_encoder.fuser_num_layers",
    "memory_encoder.fuser.layer.dim": "memory_encoder.fuser_dim",
    "memory_encoder.fuser.layer.kernel_size": "memory_encoder.fuser_kernel_size",
    "memory_encoder.fuser.layer.padding": "memory_encoder.fuser_padding",
    "memory_encoder.fuser.layer.layer_scale_init_value": "memory_encoder.layer_scale_init_value",
    "memory_encoder.fuser.layer.use_dwconv": "memory_encoder.use_dwconv",
    "use_high_res_features_in_sam": "decoder.use_high_res_features",
    "iou_prediction_use_sigmoid": "decoder.iou_prediction_use_sigmoid",
    "pred_obj_scores": "decoder.pred_obj_scores",
    "pred_obj_scores_mlp": "decoder.pred_obj_scores_mlp",
    "use_multimask_token_for_obj_ptr": "decoder.use_multimask_token_for_obj_ptr",
    "sam_mask_decoder_extra_args.dynamic_multimask_via_stability": "decoder.dynamic_multimask_via_stability",
    "sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": "decoder.dynamic_multimask_stability_delta",
    "sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": "decoder.dynamic_multimask_stability_thresh",
    **{f.name: f"tracking.{f.name}" for f in fields(TrackingConfig)},
}


@dataclass(frozen=True)
class _SameAs:
    """In _REQUIRED_VALUES: the key must equal the value read for this "section.field"."""

    field: str


# Keys we read but do not store: what the model implements fixes their value (a constant, or
# the value of another field). A tree may leave them out; a different value is refused by name.
_REQUIRED_VALUES: dict[str, Any] = {
    "image_encoder.neck.position_encoding.normalize": True,
    "image_encoder.neck.position_encoding.scale": None,
    "memory_attention.layer.activation": "relu",
    "memory_attention.layer.d_model": _SameAs("memory_attention.d_model"),
    "memory_attention.layer.self_attention.embedding_dim": _SameAs("memory_attention.d_model"),
    "memory_attention.layer.self_attention.num_heads": _SameAs("memory_attention.num_heads"),
    "memory_attention.layer.self_attention.rope_theta": _SameAs("memory_attention.rope_theta"),
    "memory_attention.layer.self_attention.feat_sizes": _SameAs("memory_attention.feat_sizes"),
    "memory_attention.layer.self_attention.downsample_rate": 1,
    "memory_attention.layer.cross_attention.embedding_dim": _SameAs("memory_attention.d_model"),
    "memory_attention.layer.cross_attention.downsample_rate": 1,
    "memory_encoder.position_encoding.normalize": True,
    "memory_encoder.position_encoding.scale": None,
    "memory_encoder.position_encoding.temperature": 10000,
    "memory_encoder.fuser.input_projection": False,
}

# Keys (besides every ``_target_`` class path) for things we deliberately do not model:
# compilation, training-only options, and the attention-internal dropout (the layer's is read).
_IGNORED_PATHS = {
    "compile_image_encoder",
    "use_act_ckpt_iterative_pt_sampling",
    "memory_attention.batch_first",
    "image_encoder.trunk.return_interm_layers",
    "memory_attention.layer.self_attention.dropout",
    "memory_attention.layer.cross_attention.dropout",
}


def config_from_tree(tree: dict, name: str = "custom") -> ModelConfig:
    """Map an official model config tree (the ``model`` node) onto a ModelConfig.

    Every key is looked up in the tables above; raises ConfigError naming a missing node, a
    refused value, or every key it does not understand.
    """
    leaves = _leaves(tree)
    defaults = ModelConfig()
    values = {
        target: _coerce(path, leaves.pop(path), _field(defaults, target))
        for path, target in _FIELD_PATHS.items()
        if path in leaves
    }
    sections: dict[str, dict[str, Any]] = {}
    for target, value in values.items():
        section, _, key = target.rpartition(".")
        sections.setdefault(section, {})[key] = value
    top = sections.pop("", {})
    cfg = ModelConfig(
        name=name, **top, **{s: replace(getattr(defaults, s), **kw) for s, kw in sections.items()}
    )

    for path, expected in _REQUIRED_VALUES.items():
        if path not in leaves:
            continue
        value = leaves.pop(path)
        if isinstance(expected, _SameAs):
            expected = _field(cfg, expected.field)
            value = _coerce(path, value, expected)
        if value != expected:
            raise ConfigError(f"{path}={value!r} is not supported (expected {expected!r})")
    unknown = sorted(set(leaves) - _IGNORED_PATHS)
    if unknown:
        raise ConfigError(f"config keys not understood: {', '.join(unknown)}")
    return cfg


def _leaves(tree: dict) -> dict[str, Any]:
    """The tree's values by dotted path, checking the node structure (``_target_`` dropped)."""
    leaves: dict[str, Any] = {}
    present = {""}

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            raise ConfigError(
                f"config node {path or '<root>'} must be a mapping, got {type(node).__name__}"
            )
        present.add(path)
        for key, value in node.items():
            full = f"{path}.{key}" if path else str(key)
            if key == "_target_" or (full in _NODES and value is None):
                continue
            if full in _NODES:
                walk(value, full)
            else:
                leaves[full] = value

    walk(tree, "")
    for path, required in _NODES.items():
        if required and path not in present and path.rpartition(".")[0] in present:
            raise ConfigError(f"config is missing the node {path}")
    return leaves


def _field(cfg: ModelConfig, target: str) -> Any:
    """The value of ``target`` ("section.field" or a top-level field) in ``cfg``."""
    value: Any = cfg
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _coerce(path: str, value: Any, like: Any) -> Any:
    """``value`` as the type of ``like`` (a field's default); ConfigError naming ``path`` if it is not one.

    Numbers may come as strings: PyYAML reads ``1e-6`` (no dot) as one.
    """
    kind = type(like)
    try:
        if kind is tuple and isinstance(value, list | tuple):
            return tuple(value)
        if kind is bool and isinstance(value, bool | int) and value in (0, 1):
            return bool(value)
        if kind is int and not isinstance(value, bool) and float(value).is_integer():
            return int(float(value))
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{path}={value!r} is not a valid {kind.__name__}")


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
    "tiny": dict(
        embed_dim=96,
        num_heads=1,
        stages=[1, 2, 7, 2],
        global_att_blocks=[5, 7, 9],
        window_pos_embed_bkg_spatial_size=[7, 7],
    ),
    "small": dict(
        embed_dim=96,
        num_heads=1,
        stages=[1, 2, 11, 2],
        global_att_blocks=[7, 10, 13],
        window_pos_embed_bkg_spatial_size=[7, 7],
    ),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(
        embed_dim=144,
        num_heads=2,
        stages=[2, 6, 36, 4],
        global_att_blocks=[23, 33, 43],
        window_pos_embed_bkg_spatial_size=[7, 7],
        window_spec=[8, 4, 16, 8],
    ),
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
                "position_encoding": {
                    "num_pos_feats": 256,
                    "normalize": True,
                    "scale": None,
                    "temperature": 10000,
                },
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
                "self_attention": {
                    "rope_theta": 10000.0,
                    "feat_sizes": [64, 64],
                    "embedding_dim": 256,
                    "num_heads": 1,
                    "downsample_rate": 1,
                    "dropout": 0.1,
                },
                "cross_attention": {
                    "rope_theta": 10000.0,
                    "feat_sizes": [64, 64],
                    "rope_k_repeat": True,
                    "embedding_dim": 256,
                    "num_heads": 1,
                    "downsample_rate": 1,
                    "dropout": 0.1,
                    "kv_in_dim": 64,
                },
            },
        },
        "memory_encoder": {
            "out_dim": 64,
            "position_encoding": {
                "num_pos_feats": 64,
                "normalize": True,
                "scale": None,
                "temperature": 10000,
            },
            "mask_downsampler": {"kernel_size": 3, "stride": 2, "padding": 1},
            "fuser": {
                "layer": {
                    "dim": 256,
                    "kernel_size": 7,
                    "padding": 3,
                    "layer_scale_init_value": 1e-6,
                    "use_dwconv": True,
                },
                "num_layers": 2,
            },
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
            tracking=replace(
                cfg.tracking, binarize_mask_from_pts_for_mem_enc=True, fill_hole_area=8
            ),
        )
    return cfg
