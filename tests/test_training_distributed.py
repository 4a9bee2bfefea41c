"""``jobs train --workers 2`` on local Ray Train (CPU, gloo): the same weights as one process
with the same global batch and micro-batches, and an exact resume after a worker is killed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from test_training_data import write_davis
from training_helpers import tiny_tree

from jobs.__main__ import main as jobs_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def ray_train(ray_local):
    pytest.importorskip("pandas", reason="ray.train needs the project's train extra")
    return ray_local


def _argv(tmp_path, out, steps, *extra):
    config = tmp_path / "tiny.json"
    if not config.exists():
        config.write_text(json.dumps({"resolved": tiny_tree()}))
        write_davis(tmp_path / "davis", [1, 2])
    return [
        "train",
        "--config",
        str(config),
        "--data",
        f"davis:{tmp_path / 'davis'}",
        "--output",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        "2",
        "--clip-len",
        "2",
        "--warmup-steps",
        "1",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        *extra,
    ]


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_two_workers_match_one_process_with_the_same_global_batch(tmp_path, ray_train):
    assert jobs_main(_argv(tmp_path, tmp_path / "one", 4, "--micro-batch", "1")) == 0
    assert jobs_main(_argv(tmp_path, tmp_path / "two", 4, "--workers", "2")) == 0
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"))


def test_a_killed_worker_is_replaced_and_the_run_resumes_exactly(tmp_path, ray_train):
    from ray._private.state import actors  # the GCS actor table; needs no dashboard

    out = tmp_path / "killed"
    killed = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "checkpoints" / "step_000002.pt").exists():
            time.sleep(0.2)
        for actor in actors(actor_state_name="ALIVE").values():
            name = actor["ActorClassName"]
            if "Worker" in name and "Train" in name and actor["Pid"]:
                os.kill(actor["Pid"], signal.SIGKILL)
                killed.append(name)
                return

    thread = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    thread.start()
    assert jobs_main(_argv(tmp_path, out, 8, "--workers", "2")) == 0
    thread.join(timeout=10)
    assert killed, "no Ray Train worker was found to kill"
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(logged) > 8 and logged[-1] == 8, (
        f"the steps after the last checkpoint ran twice: {logged}"
    )
    assert jobs_main(_argv(tmp_path, tmp_path / "ref", 8, "--micro-batch", "1")) == 0
    _assert_same(_weights(tmp_path / "ref"), _weights(out))


def test_two_workers_train_into_an_s3_url_the_weights_one_local_process_gets(tmp_path, ray_train):
    """The staging folder is pushed to the URL by the run (checkpoints from the Ray Train
    workers included): the model there equals a one-process run with the same global batch."""
    from s3_server import start_s3

    assert jobs_main(_argv(tmp_path, tmp_path / "one", 4, "--micro-batch", "1")) == 0
    with start_s3(buckets=["train-out"]) as s3:
        url = "s3://train-out/runs/two"
        storage = ["--storage-options", json.dumps(s3.storage_options)]
        assert jobs_main(_argv(tmp_path, url, 4, "--workers", "2", *storage)) == 0
        fs = s3.filesystem()
        names = {p.rpartition("runs/two/")[2] for p in fs.find("train-out/runs/two")}
        assert {"model.pt", "config.json", "train_state.pt", "log.jsonl"} <= names
        fs.get("train-out/runs/two/model.pt", str(tmp_path / "two-model.pt"))
    two = torch.load(tmp_path / "two-model.pt", weights_only=True)["model"]
    _assert_same(_weights(tmp_path / "one"), two)
