"""Reading official-style model configs: YAML files, mini_a's config.json, and refusals."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import fsspec
import pytest
import yaml

import sam2_core.config_tree as config_module
from sam2_core import ConfigError, ModelConfig, official_config, resolve_config
from sam2_core.config_tree import OFFICIAL_CONFIG_FILES, official_tree

# Hydra class paths of the official configs, node by node (the reader must ignore them).
_TARGETS = {
    (): "sam2.modeling.sam2_base.SAM2Base",
    ("image_encoder",): "sam2.modeling.backbones.image_encoder.ImageEncoder",
    ("image_encoder", "trunk"): "sam2.modeling.backbones.hieradet.Hiera",
    ("image_encoder", "neck"): "sam2.modeling.backbones.image_encoder.FpnNeck",
    (
        "image_encoder",
        "neck",
        "position_encoding",
    ): "sam2.modeling.position_encoding.PositionEmbeddingSine",
    ("memory_attention",): "sam2.modeling.memory_attention.MemoryAttention",
    ("memory_attention", "layer"): "sam2.modeling.memory_attention.MemoryAttentionLayer",
    ("memory_attention", "layer", "self_attention"): "sam2.modeling.sam.transformer.RoPEAttention",
    ("memory_attention", "layer", "cross_attention"): "sam2.modeling.sam.transformer.RoPEAttention",
    ("memory_encoder",): "sam2.modeling.memory_encoder.MemoryEncoder",
    (
        "memory_encoder",
        "position_encoding",
    ): "sam2.modeling.position_encoding.PositionEmbeddingSine",
    ("memory_encoder", "mask_downsampler"): "sam2.modeling.memory_encoder.MaskDownSampler",
    ("memory_encoder", "fuser"): "sam2.modeling.memory_encoder.Fuser",
    ("memory_encoder", "fuser", "layer"): "sam2.modeling.memory_encoder.CXBlock",
}


def _official_yaml_text(name: str) -> str:
    """YAML laid out like an official config file: a ``model`` node with class paths."""
    tree = copy.deepcopy(official_tree(name))
    for path, target in _TARGETS.items():
        node = tree
        for key in path:
            node = node[key]
        node["_target_"] = target
    tree["compile_image_encoder"] = False
    return "# @package _global_\n\n" + yaml.safe_dump({"model": tree}, sort_keys=False)


def _write(tmp_path: Path, filename: str, text: str) -> str:
    path = tmp_path / filename
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIG_FILES))
def test_official_yaml_parses_like_official_name(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, Path(OFFICIAL_CONFIG_FILES[name]).name, _official_yaml_text(name))
    parsed = resolve_config(path)
    assert isinstance(parsed, ModelConfig)
    assert dataclasses.replace(parsed, name=name) == official_config(name)
    assert resolve_config(name, apply_postprocessing=False) == official_config(name)


def test_official_names_differ_where_they_should() -> None:
    tiny, tiny21, large21 = (
        official_config(n) for n in ("sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2.1_hiera_large")
    )
    assert not tiny.tracking.no_obj_embed_spatial and tiny21.tracking.no_obj_embed_spatial
    assert tiny21.trunk.stages == (1, 2, 7, 2) and large21.trunk.stages == (2, 6, 36, 4)
    assert large21.neck.backbone_channel_list == (1152, 576, 288, 144)


def _apply_override(tree: dict, override: str) -> None:
    key, value = override.removeprefix("++").split("=", 1)
    parts = key.split(".")
    assert parts[0] == "model", override
    node = tree
    for part in parts[1:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)


def _strip(tree):
    if isinstance(tree, dict):
        return {
            k: _strip(v) for k, v in tree.items() if k not in ("_target_", "compile_image_encoder")
        }
    return tree


def test_official_tiny_tree_plus_overrides_is_mini_a_resolved_tree(mini_a_dir: Path) -> None:
    """mini_a's ``resolved`` tree is what the official code composed from sam2.1_hiera_t.yaml and
    the listed overrides; our copy of the official tree plus the same overrides must equal it."""
    doc = json.loads((mini_a_dir / "config.json").read_text())
    assert doc["base_config"] == OFFICIAL_CONFIG_FILES["sam2.1_hiera_tiny"]
    tree = official_tree("sam2.1_hiera_tiny")
    for override in doc["overrides"]:
        _apply_override(tree, override)
    assert tree == _strip(doc["resolved"])


def test_mini_a_config_json_parses(mini_a_dir: Path) -> None:
    cfg = resolve_config(str(mini_a_dir / "config.json"))
    assert cfg.image_size == 256 and cfg.feat_size == 16
    assert (
        cfg.trunk.embed_dim == 16
        and cfg.trunk.stages == (1, 2, 4, 1)
        and cfg.trunk.global_att_blocks == (4, 6)
    )
    assert cfg.hidden_dim == 64 and cfg.mem_dim == 16
    assert cfg.memory_attention.num_layers == 2 and cfg.memory_attention.kv_in_dim == 16
    assert cfg.memory_attention.feat_sizes == (16, 16)
    assert cfg.tracking.add_all_frames_to_correct_as_cond
    assert cfg.tracking.binarize_mask_from_pts_for_mem_enc
    assert (
        cfg.tracking.no_obj_embed_spatial and cfg.tracking.proj_tpos_enc_in_obj_ptrs
    )  # SAM 2.1 flags kept
    assert cfg.decoder.dynamic_multimask_via_stability
    assert cfg.decoder.dynamic_multimask_stability_delta == 0.05
    assert cfg.decoder.dynamic_multimask_stability_thresh == 0.98
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 512  # type: ignore[misc]


def test_config_from_fsspec_url() -> None:
    url = "memory://sam2-config-test/sam2.1_hiera_s.yaml"
    fs = fsspec.filesystem("memory")
    fs.pipe(url, _official_yaml_text("sam2.1_hiera_small").encode())
    try:
        assert dataclasses.replace(
            resolve_config(url), name="sam2.1_hiera_small"
        ) == official_config("sam2.1_hiera_small")
    finally:
        fs.rm("/sam2-config-test", recursive=True)


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ((), "frobnicate_memory"),
        (("image_encoder", "trunk"), "bogus_depth"),
        (("memory_encoder", "fuser", "layer"), "extra_gate"),
    ],
)
def test_unknown_keys_are_refused_by_name(tmp_path: Path, where: tuple, key: str) -> None:
    tree = official_tree("sam2.1_hiera_tiny")
    node = tree
    for part in where:
        node = node[part]
    node[key] = 3
    path = _write(tmp_path, "odd.yaml", yaml.safe_dump({"model": tree}))
    full = ".".join((*where, key))
    with pytest.raises(ConfigError, match=f"not understood: {full.replace('.', '[.]')}"):
        resolve_config(path)


def test_unknown_decoder_extra_arg_is_refused(tmp_path: Path) -> None:
    tree = official_tree("sam2_hiera_small")
    tree["sam_mask_decoder_extra_args"] = {
        "dynamic_multimask_via_stability": True,
        "mystery_flag": 1,
    }
    with pytest.raises(ConfigError, match="mystery_flag"):
        resolve_config(_write(tmp_path, "x.yaml", yaml.safe_dump({"model": tree})))


def test_unsupported_values_are_refused(tmp_path: Path) -> None:
    tree = official_tree("sam2_hiera_tiny")
    tree["memory_attention"]["layer"]["activation"] = "gelu"
    with pytest.raises(ConfigError, match="memory_attention.layer.activation='gelu'"):
        resolve_config(_write(tmp_path, "gelu.yaml", yaml.safe_dump({"model": tree})))


def test_unknown_model_name_lists_official_names() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("sam2_hiera_huge")
    msg = str(err.value)
    assert "sam2_hiera_huge" in msg
    for name in OFFICIAL_CONFIG_FILES:
        assert name in msg
    with pytest.raises(KeyError, match="sam2.1_hiera_base_plus"):
        official_config("sam3_hiera_tiny")


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        resolve_config(missing)
    with pytest.raises(ConfigError, match="neither JSON nor YAML"):
        resolve_config(_write(tmp_path, "bad.yaml", "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        resolve_config(_write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="missing the node image_encoder"):
        resolve_config(_write(tmp_path, "empty.yaml", "model:\n  image_size: 1024\n"))


def test_yaml_exponent_without_dot_is_read_as_a_number(tmp_path: Path) -> None:
    """Official files write ``layer_scale_init_value: 1e-6``, which PyYAML reads as a string."""
    text = _official_yaml_text("sam2.1_hiera_tiny")
    assert "layer_scale_init_value: 1.0e-06" in text
    text = text.replace("layer_scale_init_value: 1.0e-06", "layer_scale_init_value: 1e-6")
    assert (
        yaml.safe_load(text)["model"]["memory_encoder"]["fuser"]["layer"]["layer_scale_init_value"]
        == "1e-6"
    )
    cfg = resolve_config(_write(tmp_path, "sam2.1_hiera_t.yaml", text))
    assert cfg.memory_encoder.layer_scale_init_value == 1e-6
    assert dataclasses.replace(cfg, name="sam2.1_hiera_tiny") == official_config(
        "sam2.1_hiera_tiny"
    )


# What each official model and mini_a differ in from ModelConfig()'s defaults, as today's reader
# gives them; the defaults themselves are those of the official SAM 2 models.
_SAM21_TRACKING = {
    "tracking.no_obj_embed_spatial": True,
    "tracking.add_tpos_enc_to_obj_ptrs": True,
    "tracking.proj_tpos_enc_in_obj_ptrs": True,
    "tracking.use_signed_tpos_enc_to_obj_ptrs": True,
}
_SMALL_TRUNK_WINDOW = {"trunk.window_pos_embed_bkg_spatial_size": (7, 7)}
_TRUNK_CHANGES = {
    "tiny": {
        "trunk.stages": (1, 2, 7, 2),
        "trunk.global_att_blocks": (5, 7, 9),
        **_SMALL_TRUNK_WINDOW,
    },
    "small": {
        "trunk.stages": (1, 2, 11, 2),
        "trunk.global_att_blocks": (7, 10, 13),
        **_SMALL_TRUNK_WINDOW,
    },
    "base_plus": {
        "trunk.embed_dim": 112,
        "trunk.num_heads": 2,
        "neck.backbone_channel_list": (896, 448, 224, 112),
    },
    "large": {
        "trunk.embed_dim": 144,
        "trunk.num_heads": 2,
        "trunk.stages": (2, 6, 36, 4),
        "trunk.global_att_blocks": (23, 33, 43),
        "trunk.window_spec": (8, 4, 16, 8),
        **_SMALL_TRUNK_WINDOW,
        "neck.backbone_channel_list": (1152, 576, 288, 144),
    },
}
_MINI_A_CHANGES = {
    "image_size": 256,
    "trunk.embed_dim": 16,
    "trunk.stages": (1, 2, 4, 1),
    "trunk.global_att_blocks": (4, 6),
    "trunk.window_pos_embed_bkg_spatial_size": (4, 4),
    "neck.d_model": 64,
    "neck.backbone_channel_list": (128, 64, 32, 16),
    "neck.num_pos_feats": 64,
    "memory_attention.d_model": 64,
    "memory_attention.num_layers": 2,
    "memory_attention.dim_feedforward": 128,
    "memory_attention.kv_in_dim": 16,
    "memory_attention.feat_sizes": (16, 16),
    "memory_encoder.in_dim": 64,
    "memory_encoder.out_dim": 16,
    "memory_encoder.num_pos_feats": 16,
    "memory_encoder.mask_embed_dim": 64,
    "memory_encoder.fuser_dim": 64,
    "decoder.dynamic_multimask_via_stability": True,
    "tracking.binarize_mask_from_pts_for_mem_enc": True,
    "tracking.add_all_frames_to_correct_as_cond": True,
    **_SAM21_TRACKING,
}


def _with_changes(name: str, changes: dict) -> ModelConfig:
    """ModelConfig() named ``name`` with ``changes`` ("section.field" or "field" -> value) applied."""
    by_section: dict[str, dict] = {}
    for target, value in changes.items():
        section, _, key = target.rpartition(".")
        by_section.setdefault(section, {})[key] = value
    top = by_section.pop("", {})
    base = ModelConfig()
    sections = {s: dataclasses.replace(getattr(base, s), **kw) for s, kw in by_section.items()}
    return ModelConfig(name=name, **top, **sections)


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIG_FILES))
def test_official_yaml_parses_to_the_pinned_model_config(tmp_path: Path, name: str) -> None:
    version, size = name.split("_hiera_")
    expected = _with_changes(
        name, {**_TRUNK_CHANGES[size], **(_SAM21_TRACKING if version == "sam2.1" else {})}
    )
    path = _write(tmp_path, Path(OFFICIAL_CONFIG_FILES[name]).name, _official_yaml_text(name))
    parsed = dataclasses.replace(resolve_config(path), name=name)
    assert parsed == expected
    assert repr(parsed) == repr(expected)  # the same types too (10000.0, not 10000)
    assert official_config(name) == expected


def test_mini_a_config_json_parses_to_the_pinned_model_config(mini_a_dir: Path) -> None:
    expected = _with_changes("mini_a", _MINI_A_CHANGES)
    parsed = dataclasses.replace(resolve_config(str(mini_a_dir / "config.json")), name="mini_a")
    assert parsed == expected
    assert repr(parsed) == repr(expected)


def test_omitted_keys_fall_back_to_the_dataclass_defaults() -> None:
    """A tree of empty nodes is ModelConfig(): the reader has no defaults of its own."""
    empty_nodes = {
        "image_encoder": {"trunk": {}, "neck": {"position_encoding": {}}},
        "memory_attention": {"layer": {"self_attention": {}, "cross_attention": {}}},
        "memory_encoder": {"position_encoding": {}, "mask_downsampler": {}, "fuser": {"layer": {}}},
        "sam_mask_decoder_extra_args": {},
    }
    assert config_module.config_from_tree(empty_nodes) == ModelConfig()
    required_only = {"image_encoder": empty_nodes["image_encoder"]}
    assert config_module.config_from_tree(required_only) == ModelConfig()


def test_every_model_config_field_has_one_tree_path() -> None:
    targets = list(config_module._FIELD_PATHS.values())
    assert len(targets) == len(set(targets))
    expected = {f.name for f in dataclasses.fields(ModelConfig) if f.name != "name"}
    for section in ("trunk", "neck", "memory_attention", "memory_encoder", "decoder", "tracking"):
        expected.remove(section)
        expected |= {
            f"{section}.{f.name}" for f in dataclasses.fields(getattr(ModelConfig(), section))
        }
    assert set(targets) == expected


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        (
            ("image_encoder", "trunk"),
            "embed_dim",
            "wide",
            "image_encoder.trunk.embed_dim='wide' is not a valid int",
        ),
        (
            ("image_encoder", "trunk"),
            "stages",
            4,
            "image_encoder.trunk.stages=4 is not a valid tuple",
        ),
        ((), "num_maskmem", 6.5, "num_maskmem=6.5 is not a valid int"),
        ((), "fixed_no_obj_ptr", "yes", "fixed_no_obj_ptr='yes' is not a valid bool"),
        (
            ("memory_attention", "layer"),
            "d_model",
            128,
            r"memory_attention.layer.d_model=128 is not supported \(expected 256\)",
        ),
        (
            ("memory_attention", "layer", "self_attention"),
            "feat_sizes",
            [32, 32],
            r"feat_sizes=\(32, 32\) is not supported",
        ),
    ],
)
def test_values_of_the_wrong_type_or_inconsistent_are_refused_by_path(
    where: tuple, key: str, value, message: str
) -> None:
    tree = official_tree("sam2.1_hiera_tiny")
    node = tree
    for part in where:
        node = node[part]
    node[key] = value
    with pytest.raises(ConfigError, match=message):
        config_module.config_from_tree(tree)


def test_a_node_that_is_not_a_mapping_is_refused_by_path() -> None:
    tree = official_tree("sam2_hiera_tiny")
    tree["memory_encoder"]["fuser"] = [1, 2]
    with pytest.raises(
        ConfigError, match="config node memory_encoder.fuser must be a mapping, got list"
    ):
        config_module.config_from_tree(tree)
    with pytest.raises(
        ConfigError, match="missing the node memory_attention.layer.cross_attention"
    ):
        tree = official_tree("sam2_hiera_tiny")
        del tree["memory_attention"]["layer"]["cross_attention"]
        config_module.config_from_tree(tree)
