"""``python -m jobs label`` and ``python -m jobs submit`` as a user runs them: bad input lands
in rejects/ or failures/ with the right exit status while the valid videos are still labeled;
a wrong checkpoint is a clear fatal error; a run submitted as a Ray job labels the same rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from labeling_helpers import (
    assert_same_rows,
    make_clip,
    mini_files,
    reference_table,
    sorted_masks,
    write_jsonl,
)

from jobs.__main__ import main
from pipeline.sink import read_masks
from pipeline.storage import credential_fields

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_dashboard():
    """Local Ray with its dashboard (the Jobs API needs it); yields the dashboard URL."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    ray.init(
        address="local",  # a fresh instance, never a cluster left running on this machine
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=False,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for_job_agent(url)
    yield url
    ray.shutdown()


def _wait_for_job_agent(url: str, timeout_s: float = 120.0) -> None:
    """Block until the cluster takes jobs: its dashboard answers at once, but its job agent
    registers a little later ("No available agent to submit job"), longer on a busy machine."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = JobSubmissionClient(url)
            job = client.submit_job(entrypoint="python -c pass")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    while client.get_job_status(job) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        assert time.monotonic() < deadline, "the cluster's job agent never ran a job"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, videos_dir):
    folder = tmp_path_factory.mktemp("cli")
    dog = make_clip(videos_dir / "01_dog.mp4", folder / "dog.mp4", frames=16)
    coffee = make_clip(videos_dir / "04_coffee.mp4", folder / "coffee.mp4", frames=16)
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(20000))
    return folder, str(dog), str(coffee), str(corrupt)


def _point(frame=0, x=64, y=48):
    return {"frame": frame, "points": [[x, y]], "labels": [1]}


def _bad_manifest(folder: Path, dog: str, coffee: str, corrupt: str) -> Path:
    return write_jsonl(
        folder / "bad.jsonl",
        [
            {
                "video": dog,
                "video_id": "dog",
                "objects": [
                    {"object_id": 1, "prompts": [_point()]},
                    {"object_id": 2, "prompts": [{"frame": 3, "box": [5, 5, 60, 60]}]},
                ],
            },
            '{"video": "' + dog + '", "objects": [',  # line 2: malformed JSON
            {
                "video": dog,
                "video_id": "extra",
                "colour": "red",
                "objects": [{"object_id": 1, "prompts": [_point()]}],
            },
            {
                "video": str(folder / "missing.mp4"),
                "video_id": "missing",
                "objects": [{"object_id": 1, "prompts": [_point()]}],
            },
            {
                "video": corrupt,
                "video_id": "corrupt",
                "objects": [{"object_id": 1, "prompts": [_point()]}],
            },
            {
                "video": coffee,
                "video_id": "late",
                "objects": [{"object_id": 1, "prompts": [_point(frame=16)]}],
            },
            {
                "video": coffee,
                "video_id": "nolabels",
                "objects": [{"object_id": 1, "prompts": [{"frame": 0, "points": [[1, 2]]}]}],
            },
        ],
    )


def _label_args(manifest, output, mini_a_dir, *extra) -> list[str]:
    model, checkpoint = mini_files(mini_a_dir)
    return [
        "label",
        "--manifest",
        str(manifest),
        "--output",
        str(output),
        "--model",
        model,
        "--checkpoint",
        checkpoint,
        "--workers",
        "2",
        "--torch-threads",
        "1",
        "--run-id",
        "test-run",
        "--retry-backoff",
        "0.1",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_bad_input_is_reported_and_the_valid_video_still_labeled(
    ray_dashboard, clips, mini_a_dir, capsys
):
    folder, dog, coffee, corrupt = clips
    manifest = _bad_manifest(folder, dog, coffee, corrupt)
    out = folder / "out-bad"
    assert main(_label_args(manifest, out, mini_a_dir)) == 2

    rejects = pq.read_table(out / "rejects" / "rejects.parquet").to_pylist()
    by_line = {r["location"]: r for r in rejects}
    assert set(by_line) == {"bad.jsonl line 2", "bad.jsonl line 3", "bad.jsonl line 7"}
    assert "malformed JSON" in by_line["bad.jsonl line 2"]["reason"]
    assert by_line["bad.jsonl line 3"]["field"] == "colour"
    assert by_line["bad.jsonl line 7"]["field"].endswith("labels")

    failures = {
        f["video_id"]: f for f in pq.read_table(out / "failures" / "failures.parquet").to_pylist()
    }
    assert set(failures) == {"missing", "corrupt", "late"}
    assert failures["missing"]["error_type"] == "FileNotFoundError"
    assert failures["corrupt"]["error_type"] == "VideoDecodeError"
    assert (
        failures["late"]["error_type"] == "InputError"
        and "past the end" in failures["late"]["reason"]
    )
    assert all(f["attempts"] == 1 for f in failures.values())  # permanent: never retried
    assert failures["late"]["location"] == "bad.jsonl line 6"

    table = read_masks(str(out))
    assert set(table.column("video_id").to_pylist()) == {"dog"}
    assert table.num_rows == 2 * 16
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["units_done"], summary["failed"], summary["rejected"]) == (1, 3, 3)
    assert "3 failed, 3 rejected" in capsys.readouterr().out


def test_strict_mode_labels_nothing_when_something_is_rejected(clips, mini_a_dir):
    folder, dog, coffee, corrupt = clips
    manifest = _bad_manifest(folder, dog, coffee, corrupt)
    out = folder / "out-strict"
    assert main(_label_args(manifest, out, mini_a_dir, "--strict")) == 2
    assert len(pq.read_table(out / "rejects" / "rejects.parquet")) == 3
    assert read_masks(str(out)).num_rows == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "rejected"


@pytest.mark.slow
def test_wrong_checkpoint_is_a_fatal_error(ray_dashboard, clips, mini_a_dir, tmp_path, capsys):
    import torch

    folder, dog, _, _ = clips
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"video": dog, "objects": [{"object_id": 1, "prompts": [_point()]}]}]
    )
    state = torch.load(mini_a_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    state["model"].pop(sorted(state["model"])[0])  # a checkpoint of some other model
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    args = _label_args(manifest, tmp_path / "out", mini_a_dir)
    args[args.index("--checkpoint") + 1] = str(wrong)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "could not load the model" in err
    assert read_masks(str(tmp_path / "out")).num_rows == 0


def test_model_demo_labels_with_the_bundled_model_and_a_lone_checkpoint_is_refused(
    clips, tmp_path, capsys
):
    folder, dog, _, _ = clips
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"video": dog, "objects": [{"object_id": 1, "prompts": [_point()]}]}]
    )
    lone = [
        "label",
        "--manifest",
        str(manifest),
        "--output",
        str(tmp_path / "x"),
        "--checkpoint",
        "c.pt",
    ]
    assert main(lone) == 1
    assert "--checkpoint needs --model" in capsys.readouterr().err
    out = tmp_path / "o"
    demo = [
        "label",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--num-cpus",
        "1",
        "--no-progress",
        "--model",
        "demo",
    ]
    assert main([*demo, "--checkpoint", "c.pt"]) == 1
    assert "--model demo brings its own weights" in capsys.readouterr().err
    assert main(demo) == 0
    assert "--model demo: using the bundled demo model" in capsys.readouterr().err
    table = read_masks(str(out))
    models = set(table.column("model").to_pylist())
    assert (
        table.num_rows > 0
        and len(models) == 1
        and models.pop().startswith("assets/demo_config.json@")
    )


def _submit_args(clips, mini_a_dir, tmp_path) -> list[str]:
    """``jobs submit`` arguments for one clicked object, aimed at a port nothing listens on."""
    dog = clips[1]
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"video": dog, "objects": [{"object_id": 1, "prompts": [_point()]}]}]
    )
    args = _label_args(manifest, tmp_path / "out", mini_a_dir)
    return ["submit", *args[1:], "--address", f"http://127.0.0.1:{_free_port()}"]


def test_submit_to_an_unreachable_cluster_exits_1(clips, mini_a_dir, tmp_path, capsys):
    assert main(_submit_args(clips, mini_a_dir, tmp_path)) == 1
    assert "could not submit" in capsys.readouterr().err


def test_submit_refuses_credentials_in_storage_options(clips, mini_a_dir, tmp_path, capsys):
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "AKIA",
        "client_kwargs": {"aws_secret_access_key": "s"},
    }
    args = _submit_args(clips, mini_a_dir, tmp_path)
    assert main([*args, "--storage-options", json.dumps(options)]) == 1
    err = capsys.readouterr().err
    assert "key, client_kwargs.aws_secret_access_key look like credentials" in err
    assert "could not submit" not in err and "AKIA" not in err
    assert (
        credential_fields(
            {"endpoint_url": "x", "anon": False, "client_kwargs": {"region_name": "eu"}}
        )
        == []
    )


@pytest.mark.slow
def test_submit_runs_the_label_command_as_a_ray_job(ray_dashboard, clips, mini_a_dir, tmp_path):
    folder, dog, coffee, _ = clips
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"video": dog, "video_id": "dog", "objects": [{"object_id": 1, "prompts": [_point()]}]},
            {
                "video": coffee,
                "video_id": "coffee",
                "objects": [{"object_id": 2, "prompts": [{"frame": 8, "box": [20, 20, 90, 80]}]}],
            },
        ],
    )
    out = tmp_path / "out"
    args = _label_args(manifest, out, mini_a_dir)
    args[0] = "submit"
    command = [
        sys.executable,
        "-m",
        "jobs",
        *args,
        "--address",
        ray_dashboard,
        "--follow",
        "--python",
        sys.executable,
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted job" in done.stdout and "ray job logs" in done.stdout
    assert "2 unit(s) labeled" in done.stdout  # the label command's own report, from the job's log
    assert_same_rows(sorted_masks(out), reference_table(mini_a_dir, manifest))


def test_unreachable_ray_address_exits_1_quickly(clips, mini_a_dir, tmp_path):
    folder, dog, _, _ = clips
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"video": dog, "objects": [{"object_id": 1, "prompts": [_point()]}]}]
    )
    args = _label_args(manifest, tmp_path / "out", mini_a_dir)
    command = [sys.executable, "-m", "jobs", *args, "--ray-address", f"127.0.0.1:{_free_port()}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "could not start or reach Ray" in done.stderr and "ray status" in done.stderr


@pytest.mark.slow
def test_submit_train_runs_the_train_command_as_a_ray_job(ray_dashboard, tmp_path):
    from test_training_data import write_davis
    from training_helpers import tiny_tree

    import sam2_core

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"resolved": tiny_tree()}))
    write_davis(tmp_path / "davis", [1])
    out = tmp_path / "trained"
    command = [
        sys.executable,
        "-m",
        "jobs",
        "submit",
        "train",
        "--config",
        "tiny.json",  # relative: made absolute before it leaves this machine
        "--data",
        "davis:davis",
        "--output",
        "trained",
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--clip-len",
        "2",
        "--warmup-steps",
        "1",
        "--checkpoint-every",
        "2",
        "--address",
        ray_dashboard,
        "--follow",
        "--python",
        sys.executable,
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted job" in done.stdout and f"--output {out}" in done.stdout
    assert "done: 2 steps" in done.stdout  # the train command's own report, from the job's log
    model = sam2_core.build_model(str(out / "config.json"), str(out / "model.pt"))
    assert model.image_size == 64
