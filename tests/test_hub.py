"""``sam2_core.hub``: names and URIs to checkpoint bytes whose SHA-256 is checked where they are loaded.

The worker tests build a real ``LabelWorker`` in this process (no Ray: the
class is plain) on the mini_a model; the "other" checkpoint is a valid
checkpoint of the same model with other weights, so only the digest can
tell it apart. Official names are served by an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import fsspec
import pytest
import torch
from http_mirror import serve_folder

from pipeline.worker import LabelWorker, WorkerConfig
from sam2_core import hub, resolve_config
from sam2_core.modeling.sam2 import SAM2Model

SECRET = "s3cr3t-never-shown"


@pytest.fixture(scope="module")
def mini_files(mini_a_dir: Path) -> tuple[str, Path]:
    return str(mini_a_dir / "config.json"), mini_a_dir / "checkpoint.pt"


@pytest.fixture(scope="module")
def other_bytes(mini_files, tmp_path_factory) -> bytes:
    """A valid checkpoint of the mini model with other (random) weights."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.pt"
    torch.save({"model": SAM2Model(resolve_config(mini_files[0])).state_dict()}, path)
    return path.read_bytes()


@pytest.fixture
def memory_dir():
    fs = fsspec.filesystem("memory")
    root = "memory://hub-test"
    try:
        yield root
    finally:
        if fs.exists("/hub-test"):
            fs.rm("/hub-test", recursive=True)


def _worker(model: str, checkpoint: str, digest: str, tmp_path: Path, **extra) -> LabelWorker:
    return LabelWorker(
        WorkerConfig(
            model=model,
            checkpoint=checkpoint,
            checkpoint_digest=digest,
            output=str(tmp_path / "out"),
            run_id="run",
            model_name="mini",
            cache_dir=str(tmp_path / "cache"),
            **extra,
        )
    )


def _same_weights(model, checkpoint: Path) -> bool:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# --- one digest -----------------------------------------------------------------------------------


def test_one_digest_for_files_urls_and_bytes(tmp_path, memory_dir):
    data = bytes(range(256)) * 9000  # more than one streamed chunk
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    fsspec.filesystem("memory").pipe(f"{memory_dir}/f.bin", data)
    expected = hashlib.sha256(data).hexdigest()
    assert hub.sha256_bytes(data) == expected
    assert hub.sha256_file(str(local)) == expected
    assert hub.sha256_file(f"{memory_dir}/f.bin") == expected
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.pt"):
        hub.sha256_file(str(tmp_path / "nope.pt"), what="checkpoint")
    with pytest.raises(FileNotFoundError, match="not found"):
        hub.sha256_file(str(tmp_path))  # a folder is not a file


def test_cache_folder_honours_one_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.ENV_CACHE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / ".cache" / "sam2-labeler"
    monkeypatch.setenv(hub.ENV_CACHE, str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"
    assert hub.cache_dir(tmp_path / "given") == tmp_path / "given"


def test_official_names_are_written_once():
    from sam2_core.config_tree import OFFICIAL_CONFIG_FILES, OFFICIAL_MODELS, official_tree

    assert set(OFFICIAL_MODELS) == set(hub.OFFICIAL_CHECKPOINTS)
    for name, entry in hub.OFFICIAL_CHECKPOINTS.items():
        assert name == f"{entry.version}_hiera_{entry.variant}"
        assert OFFICIAL_CONFIG_FILES[name] == entry.config_file
        assert official_tree(name)["image_encoder"]["trunk"]
    with pytest.raises(KeyError, match="sam2.1_hiera_tiny"):
        official_tree("sam3_hiera_huge")
    assert (
        hub.checkpoint_sha256("sam2.1_hiera_large")
        == hub.OFFICIAL_CHECKPOINTS["sam2.1_hiera_large"].sha256
    )


# --- the worker checks the bytes it loads ---------------------------------------------------------


def test_worker_refuses_a_local_checkpoint_replaced_after_the_driver_hashed_it(
    mini_files, other_bytes, tmp_path
):
    model, real = mini_files
    path = tmp_path / "model.pt"
    path.write_bytes(real.read_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # what the driver plans with
    path.write_bytes(other_bytes)  # replaced before the worker starts

    worker = _worker(model, str(path), digest, tmp_path, storage_options={"secret": SECRET})
    info = worker.ready()
    assert info.error and info.error.startswith("CheckpointDigestError: "), info
    assert info.transient is False
    message = info.error
    assert str(path) in message
    assert digest[:12] in message and hashlib.sha256(other_bytes).hexdigest()[:12] in message
    assert digest not in message, "digests are shown short"
    assert SECRET not in message
    with pytest.raises(ValueError, match="CheckpointDigestError|sha256"):
        worker.run(None)


def test_worker_loads_a_local_checkpoint_whose_bytes_match(mini_files, tmp_path):
    model, real = mini_files
    worker = _worker(model, str(real), hashlib.sha256(real.read_bytes()).hexdigest(), tmp_path)
    assert worker.ready().error is None, worker.ready()
    assert _same_weights(worker.model, real)


def test_worker_fetches_again_over_a_planted_cache_copy(
    mini_files, other_bytes, tmp_path, memory_dir
):
    """Choice: a cached copy whose bytes do not match is never loaded; the worker reads the
    source again, checks it, and replaces the cached copy."""
    model, real = mini_files
    uri = f"{memory_dir}/models/mini.pt"
    fsspec.filesystem("memory").pipe(uri, real.read_bytes())
    digest = hashlib.sha256(real.read_bytes()).hexdigest()
    planted = tmp_path / "cache" / "checkpoints" / f"{digest[:32]}-mini.pt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(other_bytes)

    worker = _worker(model, uri, digest, tmp_path)
    assert worker.ready().error is None, worker.ready()
    assert _same_weights(worker.model, real), "the planted weights were loaded"
    assert planted.read_bytes() == real.read_bytes()

    # The next worker on the node reads the (now good) cached copy, not the source.
    fsspec.filesystem("memory").rm(uri)
    again = _worker(model, uri, digest, tmp_path)
    assert again.ready().error is None, again.ready()
    assert _same_weights(again.model, real)


def test_worker_refuses_a_url_changed_after_the_driver_hashed_it(
    mini_files, other_bytes, tmp_path, memory_dir
):
    model, real = mini_files
    uri = f"{memory_dir}/models/mini.pt"
    digest = hashlib.sha256(real.read_bytes()).hexdigest()
    fsspec.filesystem("memory").pipe(uri, other_bytes)

    info = _worker(model, uri, digest, tmp_path).ready()
    assert info.error and info.error.startswith("CheckpointDigestError: "), info
    assert uri in info.error and digest[:12] in info.error
    assert not list((tmp_path / "cache").rglob("*.pt")), "a mismatching copy must not be cached"


# --- official names -------------------------------------------------------------------------------


@pytest.fixture
def mirror(mini_files, tmp_path, monkeypatch):
    """An HTTP mirror on 127.0.0.1 of the official layout holding the mini checkpoint as
    sam2.1_hiera_tiny.pt, made "official" in the table; (entry, GET paths seen)."""
    real = mini_files[1].read_bytes()
    root = tmp_path / "mirror"
    entry = dataclasses.replace(
        hub.OFFICIAL_CHECKPOINTS["sam2.1_hiera_tiny"],
        sha256=hashlib.sha256(real).hexdigest(),
        size=len(real),
    )
    monkeypatch.setitem(hub.OFFICIAL_CHECKPOINTS, entry.name, entry)
    (root / entry.path).parent.mkdir(parents=True)
    (root / entry.path).write_bytes(real)
    with serve_folder(root) as (base, gets):
        monkeypatch.setenv(hub.ENV_BASE_URL, base)
        yield entry, gets


def test_official_name_is_downloaded_once_into_the_cache_and_checked(mirror, other_bytes, tmp_path):
    entry, gets = mirror
    cache = tmp_path / "cache"
    got = hub.read_checkpoint(entry.name, cache=cache, log=lambda m: None)
    assert got.sha256 == entry.sha256 and (cache / entry.filename).read_bytes() == got.data
    assert len(gets) == 1
    assert hub.read_checkpoint(entry.name, cache=cache, log=lambda m: None).data == got.data
    assert len(gets) == 1, "a verified cached copy is not downloaded again"

    (cache / entry.filename).write_bytes(other_bytes)  # planted under the expected name
    assert hub.read_checkpoint(entry.name, cache=cache, log=lambda m: None).sha256 == entry.sha256
    assert len(gets) == 2 and (cache / entry.filename).read_bytes() == got.data


def test_worker_and_cli_share_the_cache_for_official_names(
    mirror, mini_files, tmp_path, monkeypatch
):
    from jobs.__main__ import main

    entry, gets = mirror
    monkeypatch.setenv(hub.ENV_CACHE, str(tmp_path / "node-cache"))
    assert main(["fetch-checkpoint", entry.name]) == 0
    assert len(gets) == 1
    worker = LabelWorker(
        WorkerConfig(
            model=mini_files[0],
            checkpoint=entry.name,
            checkpoint_digest=hub.checkpoint_sha256(entry.name),
            output=str(tmp_path / "out"),
            run_id="run",
            model_name="mini",
        )
    )
    assert worker.ready().error is None, worker.ready()
    assert len(gets) == 1, "the worker used the copy fetch-checkpoint put in the cache"
    assert _same_weights(worker.model, mini_files[1])
