"""Reading official-style model configs: YAML files, mini_a's config.json, and refusals."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import fsspec
import pytest
import yaml

from sam2_core import ConfigError, ModelConfig, official_config, resolve_config
from sam2_core.config import OFFICIAL_CONFIG_FILES, official_tree

# Hydra class paths of the official configs, node by node (the reader must ignore them).
_TARGETS = {
    (): "sam2.modeling.sam2_base.SAM2Base",
    ("image_encoder",): "sam2.modeling.backbones.image_encoder.ImageEncoder",
    ("image_encoder", "trunk"): "sam2.modeling.backbones.hieradet.Hiera",
    ("image_encoder", "neck"): "sam2.modeling.backbones.image_encoder.FpnNeck",
    ("image_encoder", "neck", "position_encoding"): "sam2.modeling.position_encoding.PositionEmbeddingSine",
    ("memory_attention",): "sam2.modeling.memory_attention.MemoryAttention",
    ("memory_attention", "layer"): "sam2.modeling.memory_attention.MemoryAttentionLayer",
    ("memory_attention", "layer", "self_attention"): "sam2.modeling.sam.transformer.RoPEAttention",
    ("memory_attention", "layer", "cross_attention"): "sam2.modeling.sam.transformer.RoPEAttention",
    ("memory_encoder",): "sam2.modeling.memory_encoder.MemoryEncoder",
    ("memory_encoder", "position_encoding"): "sam2.modeling.position_encoding.PositionEmbeddingSine",
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
    tiny, tiny21, large21 = (official_config(n) for n in ("sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2.1_hiera_large"))
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
        return {k: _strip(v) for k, v in tree.items() if k not in ("_target_", "compile_image_encoder")}
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
    assert cfg.trunk.embed_dim == 16 and cfg.trunk.stages == (1, 2, 4, 1) and cfg.trunk.global_att_blocks == (4, 6)
    assert cfg.hidden_dim == 64 and cfg.mem_dim == 16
    assert cfg.memory_attention.num_layers == 2 and cfg.memory_attention.kv_in_dim == 16
    assert cfg.memory_attention.feat_sizes == (16, 16)
    assert cfg.tracking.add_all_frames_to_correct_as_cond
    assert cfg.tracking.binarize_mask_from_pts_for_mem_enc
    assert cfg.tracking.no_obj_embed_spatial and cfg.tracking.proj_tpos_enc_in_obj_ptrs  # SAM 2.1 flags kept
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
        assert dataclasses.replace(resolve_config(url), name="sam2.1_hiera_small") == official_config("sam2.1_hiera_small")
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
    tree["sam_mask_decoder_extra_args"] = {"dynamic_multimask_via_stability": True, "mystery_flag": 1}
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
    assert yaml.safe_load(text)["model"]["memory_encoder"]["fuser"]["layer"]["layer_scale_init_value"] == "1e-6"
    cfg = resolve_config(_write(tmp_path, "sam2.1_hiera_t.yaml", text))
    assert cfg.memory_encoder.layer_scale_init_value == 1e-6
    assert dataclasses.replace(cfg, name="sam2.1_hiera_tiny") == official_config("sam2.1_hiera_tiny")
