"""Checkpoint layout of the eight official models, and strict, safe loading of bad checkpoints."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import torch

from sam2_core import (
    OFFICIAL_MODELS,
    CheckpointError,
    build_meta,
    build_model,
    load_checkpoint,
    resolve_config,
)
from sam2_core.config_tree import OFFICIAL_CONFIG_FILES
from sam2_core.modeling.sam2 import SAM2Model

REPO = Path(__file__).resolve().parents[1]


def _reference_keys(reference_dir: Path, name: str) -> dict:
    return json.loads((reference_dir / "keys" / f"{name}.json").read_text())


def test_there_are_eight_official_models(reference_dir: Path) -> None:
    assert len(OFFICIAL_MODELS) == 8
    assert sorted(p.stem for p in (reference_dir / "keys").glob("*.json")) == sorted(
        OFFICIAL_MODELS
    )


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIG_FILES))
def test_official_state_dict_names_and_shapes(reference_dir: Path, name: str) -> None:
    ref = _reference_keys(reference_dir, name)
    model = build_meta(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing, extra = (
        sorted(set(ref["tensors"]) - set(ours)),
        sorted(set(ours) - set(ref["tensors"])),
    )
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (ours[k], s) for k, s in ref["tensors"].items() if ours[k] != s}
    assert not wrong
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]
    assert OFFICIAL_CONFIG_FILES[name] == ref["config"]


def test_keys_command_prints_the_reference_layout(reference_dir: Path) -> None:
    name = "sam2.1_hiera_tiny"
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_core.parity", "keys", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    ref = _reference_keys(reference_dir, name)
    assert printed["tensors"] == ref["tensors"]
    assert printed["num_parameters"] == ref["num_parameters"]
    assert printed["config"] == ref["config"]


def test_keys_command_rejects_unknown_name() -> None:
    from sam2_core import parity

    with pytest.raises(ValueError, match="sam2.1_hiera_tiny"):
        parity.model_keys("sam2_hiera_huge")


# --- loading -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_config(mini_a_dir: Path):
    return resolve_config(str(mini_a_dir / "config.json"))


@pytest.fixture(scope="module")
def mini_checkpoint(mini_a_dir: Path) -> Path:
    return mini_a_dir / "checkpoint.pt"


def _save_random(cfg, path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"model": SAM2Model(cfg).state_dict()}, path)
    return path


def test_checkpoint_of_another_size_is_refused(mini_config, tmp_path: Path) -> None:
    wider = dataclasses.replace(
        mini_config,
        trunk=dataclasses.replace(mini_config.trunk, embed_dim=24),
        neck=dataclasses.replace(mini_config.neck, backbone_channel_list=(192, 96, 48, 24)),
    )
    path = _save_random(wider, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError) as err:
        build_model(mini_config, str(path))
    msg = str(err.value)
    assert str(path) in msg
    theirs, ours = (
        torch.load(path, weights_only=True)["model"],
        build_meta(mini_config).state_dict(),
    )
    n_wrong = sum(tuple(theirs[k].shape) != tuple(v.shape) for k, v in ours.items())
    assert n_wrong > 50
    assert f"{n_wrong} of the wrong shape" in msg
    assert "image_encoder.neck.convs.3.conv.weight (64, 24, 1, 1) (model: (64, 16, 1, 1))" in msg
    assert "missing" not in msg and "unexpected" not in msg


def test_checkpoint_with_other_blocks_is_refused(mini_config, tmp_path: Path) -> None:
    deeper = dataclasses.replace(
        mini_config,
        trunk=dataclasses.replace(mini_config.trunk, stages=(1, 2, 5, 1), global_att_blocks=(5, 7)),
    )
    path = _save_random(deeper, tmp_path / "deeper.pt")
    with pytest.raises(CheckpointError, match=r"unexpected: image_encoder\.trunk\.blocks\.8\."):
        build_model(mini_config, str(path))

    shallower = dataclasses.replace(
        mini_config,
        memory_attention=dataclasses.replace(mini_config.memory_attention, num_layers=1),
    )
    path = _save_random(shallower, tmp_path / "shallower.pt")
    with pytest.raises(CheckpointError, match=r"missing: memory_attention\.layers\.1\."):
        build_model(mini_config, str(path))


def test_truncated_checkpoint_is_refused(
    mini_config, mini_checkpoint: Path, tmp_path: Path
) -> None:
    data = mini_checkpoint.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        build_model(mini_config, str(path))
    assert str(path) in str(err.value)


def test_non_checkpoint_files_are_refused(mini_config, tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        build_model(mini_config, str(text))

    plain_list = tmp_path / "list.pt"
    torch.save([torch.zeros(2), torch.ones(3)], plain_list)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        build_model(mini_config, str(plain_list))

    not_tensors = tmp_path / "settings.pt"
    torch.save({"lr": 0.1, "steps": 3}, not_tensors)
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        build_model(mini_config, str(not_tensors))

    # A bare state dict (SAM 1's layout) is read, then refused tensor by tensor.
    bare_state_dict = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(2)}, bare_state_dict)
    with pytest.raises(CheckpointError, match="1 unexpected: weight"):
        build_model(mini_config, str(bare_state_dict))


def test_missing_local_checkpoint(mini_config, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "sam2.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found") as err:
        build_model(mini_config, str(path))
    assert str(path) in str(err.value)


def test_pickled_objects_are_never_unpickled(
    mini_config, mini_checkpoint: Path, tmp_path: Path
) -> None:
    """A checkpoint whose pickle would run code (here: create a file) is refused without running it."""
    marker = tmp_path / "pwned"

    class Trap:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    state = torch.load(mini_checkpoint, map_location="cpu", weights_only=True)["model"]
    path = tmp_path / "trap.pt"
    torch.save({"model": state, "extra": Trap()}, path)

    with pytest.raises(CheckpointError):
        build_model(mini_config, str(path))
    assert not marker.exists()

    # The trap is real: unrestricted unpickling would have run it.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def _assert_same_weights(model, reference) -> None:
    ref = reference.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_checkpoint_from_memory_url(mini_config, mini_checkpoint: Path, mini) -> None:
    url = "memory://sam2-ckpt-test/mini_a/checkpoint.pt"
    fs = fsspec.filesystem("memory")
    fs.pipe(url, mini_checkpoint.read_bytes())
    try:
        model = build_model(mini_config)
        load_checkpoint(model, url)
        _assert_same_weights(model, mini)
        with pytest.raises(FileNotFoundError, match="memory://nope/x.pt"):
            load_checkpoint(build_model(mini_config), "memory://nope/x.pt")
    finally:
        fs.rm("/sam2-ckpt-test", recursive=True)


@pytest.fixture(scope="module")
def s3():
    from s3_server import start_s3

    with start_s3(buckets=["sam2-ckpts"]) as server:
        yield server


def test_checkpoint_from_s3(s3, mini_config, mini_checkpoint: Path, mini) -> None:
    s3.filesystem().put(str(mini_checkpoint), "sam2-ckpts/mini_a/checkpoint.pt")
    model = build_model(
        mini_config, "s3://sam2-ckpts/mini_a/checkpoint.pt", storage_options=s3.storage_options
    )
    _assert_same_weights(model, mini)


def test_missing_s3_checkpoint(s3, mini_config) -> None:
    url = "s3://sam2-ckpts/does/not/exist.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found") as err:
        build_model(mini_config, url, storage_options=s3.storage_options)
    assert url in str(err.value)
