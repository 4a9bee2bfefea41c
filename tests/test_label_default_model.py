"""``jobs label`` without ``--model`` uses an official SAM 2.1 model fetched by name (never the
toy model silently); ``--model demo`` is the bundled model. Nothing is downloaded from the
internet: the official checkpoint is served by a loopback mirror, as in tests/test_hub.py."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib

import pytest
from http_mirror import serve_folder

from jobs import label
from pipeline.worker import LabelWorker, WorkerConfig
from sam2_core import hub
from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(
        **{"model": None, "checkpoint": None, "checkpoint_cache": None, **given}
    )


def test_without_model_the_official_default_is_chosen_by_name_and_said(capsys):
    args = _args()
    assert label.resolve_model(args) is None
    assert args.model == args.checkpoint == label.DEFAULT_MODEL == "sam2.1_hiera_base_plus"
    assert label.DEFAULT_MODEL in hub.OFFICIAL_CHECKPOINTS
    err = capsys.readouterr().err
    assert (
        "no --model given: using the official sam2.1_hiera_base_plus" in err
        and "--model demo" in err
    )


def test_model_demo_is_the_bundled_model_and_says_so(capsys):
    args = _args(model="demo")
    assert label.resolve_model(args) is None
    assert (args.model, args.checkpoint) == (str(DEMO_CONFIG_PATH), str(DEMO_CHECKPOINT_PATH))
    assert "bundled demo model" in capsys.readouterr().err
    assert "brings its own weights" in label.resolve_model(_args(model="demo", checkpoint="x.pt"))
    assert "--checkpoint needs --model" in label.resolve_model(_args(checkpoint="x.pt"))
    given = _args(model="sam2.1_hiera_tiny", checkpoint="t.pt")
    assert label.resolve_model(given) is None and given.checkpoint == "t.pt"


@pytest.fixture
def default_mirror(tmp_path, monkeypatch):
    """A loopback mirror with the official layout serving bytes for the default model's entry
    (its digest patched to them); yields (entry, requested paths)."""
    served = b"stand-in checkpoint bytes"
    entry = dataclasses.replace(
        hub.OFFICIAL_CHECKPOINTS[label.DEFAULT_MODEL],
        sha256=hashlib.sha256(served).hexdigest(),
        size=len(served),
    )
    monkeypatch.setitem(hub.OFFICIAL_CHECKPOINTS, entry.name, entry)
    root = tmp_path / "mirror"
    (root / entry.path).parent.mkdir(parents=True)
    (root / entry.path).write_bytes(served)
    with serve_folder(root) as (base, gets):
        monkeypatch.setenv(hub.ENV_BASE_URL, base)
        yield entry, gets


def test_the_default_models_checkpoint_is_fetched_by_name_into_the_cache_and_checked(
    default_mirror, tmp_path
):
    entry, gets = default_mirror
    args = _args()
    label.resolve_model(args)
    cache = tmp_path / "cache"
    worker = LabelWorker(
        WorkerConfig(
            model=args.model,
            checkpoint=args.checkpoint,
            checkpoint_digest=hub.checkpoint_sha256(args.checkpoint),
            output=str(tmp_path / "out"),
            run_id="run",
            model_name=args.model,
            cache_dir=str(cache),
        )
    )
    info = worker.ready()
    assert gets == [f"/{entry.path}"], (
        "the worker asked the hub for the default model's official file"
    )
    assert (cache / entry.filename).read_bytes() == (tmp_path / "mirror" / entry.path).read_bytes()
    # the stand-in bytes are no checkpoint: loading them fails, naming the checkpoint
    assert info.error is not None and label.DEFAULT_MODEL in info.error
