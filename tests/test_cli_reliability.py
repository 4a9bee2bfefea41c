"""The CLI under misuse and mishaps: bad numbers and malformed options are argparse errors that
never echo secrets; credentials never travel to a cluster's job table; relative paths name the
same files on the driver and on workers with another working directory; unreachable storage,
a missing filesystem package, a text file as checkpoint and Ctrl-C end with one line, not a
traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labeling_helpers import make_clip, mini_files, write_jsonl

from jobs.__main__ import main
from pipeline.sink import COMMITS_DIR, read_masks

REPO = Path(__file__).resolve().parents[1]
SECRET = "wJalrXUtnFEMI-K7MDENG-s3cr3t"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jobs(args: list[str], cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """``python -m jobs ARGS`` in `cwd` with this checkout first on the path."""
    environ = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), **env}
    environ.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _point(frame: int = 0) -> dict:
    return {"frame": frame, "points": [[64, 48]], "labels": [1]}


@pytest.fixture(scope="module")
def clip(tmp_path_factory, videos_dir) -> Path:
    return make_clip(
        videos_dir / "01_dog.mp4", tmp_path_factory.mktemp("clip") / "dog.mp4", frames=12
    )


# ------------------------------------------------------------------------------ option values


@pytest.mark.parametrize(
    "argv, flag",
    [
        (
            ["label", "--manifest", "m", "--output", "o", "--cpus-per-worker", "nan"],
            "--cpus-per-worker",
        ),
        (["label", "--manifest", "m", "--output", "o", "--unit-timeout", "nan"], "--unit-timeout"),
        (["label", "--manifest", "m", "--output", "o", "--unit-timeout", "0"], "--unit-timeout"),
        (
            ["label", "--manifest", "m", "--output", "o", "--retry-backoff", "inf"],
            "--retry-backoff",
        ),
        (
            ["label", "--manifest", "m", "--output", "o", "--gpus-per-worker", "-1"],
            "--gpus-per-worker",
        ),
        (
            ["evaluate", "--predictions", "p", "--ground-truth", "g", "--bound-th", "nan"],
            "--bound-th",
        ),
        (["train", "--output", "o", "--lr", "nan"], "--lr"),
        (["train", "--output", "o", "--min-lr-ratio", "1.5"], "--min-lr-ratio"),
        (["train", "--output", "o", "--seed", "-3"], "--seed"),
        (["make-synthetic", "--output", "o", "--crf", "99"], "--crf"),
    ],
)
def test_numeric_options_refuse_nan_infinity_and_out_of_range_values(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected" in err and repr(argv[-1]) in err


def test_malformed_storage_options_never_echo_the_secret(capsys):
    for text in ('{"key": "AKIA", "secret": "' + SECRET + '", ', '["' + SECRET + '"]'):
        with pytest.raises(SystemExit):
            main(["label", "--manifest", "m", "--output", "o", "--storage-options", text])
        err = capsys.readouterr().err
        assert "--storage-options" in err and SECRET not in err


def test_label_joining_a_cluster_refuses_credentials_in_storage_options(
    tmp_path, capsys, monkeypatch
):
    options = json.dumps({"endpoint_url": "http://127.0.0.1:9", "key": "AKIA", "secret": SECRET})
    base = [
        "label",
        "--manifest",
        "m.jsonl",
        "--output",
        str(tmp_path / "o"),
        "--storage-options",
        options,
    ]
    port = _free_port()
    assert main([*base, "--ray-address", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert "key, secret look like credentials" in err and "environment or cloud role" in err
    assert SECRET not in err and "could not start or reach Ray" not in err  # refused before joining
    monkeypatch.setenv(
        "RAY_ADDRESS", f"127.0.0.1:{port}"
    )  # joins a cluster through the environment
    assert main(base) == 1
    assert "look like credentials" in capsys.readouterr().err


# ------------------------------------------------------------------------------ one-line errors


def test_unreachable_s3_endpoint_is_one_line_naming_the_uri(tmp_path):
    options = json.dumps({"endpoint_url": f"http://127.0.0.1:{_free_port()}"})
    done = _jobs(
        [
            "label",
            "--manifest",
            "s3://bucket/m.jsonl",
            "--output",
            str(tmp_path / "o"),
            "--storage-options",
            options,
        ],
        tmp_path,
        timeout=120,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "error: cannot reach s3://bucket/m.jsonl" in done.stderr


def test_url_whose_filesystem_package_is_missing_is_one_line(tmp_path):
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    done = _jobs(
        ["label", "--manifest", "gs://bucket/m.jsonl", "--output", str(tmp_path / "o")],
        tmp_path,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        "gs://bucket/m.jsonl: no filesystem for this URL" in done.stderr and "gcsfs" in done.stderr
    )


def test_text_file_as_checkpoint_is_named_and_never_advises_unsafe_loading(
    tmp_path, clip, mini_a_dir
):
    model, _ = mini_files(mini_a_dir)
    notes = tmp_path / "notes.pt"
    notes.write_text("these are my notes, not weights\n")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"video": str(clip), "objects": [{"object_id": 1, "prompts": [_point()]}]}],
    )
    args = ["label", "--manifest", str(manifest), "--output", str(tmp_path / "o"), "--model", model]
    done = _jobs([*args, "--checkpoint", str(notes), "--num-cpus", "1", "--no-progress"], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{notes} is not a PyTorch checkpoint" in done.stderr
    assert "weights_only" not in done.stderr


def test_ctrl_c_writes_the_summary_and_exits_130_quietly(tmp_path, clip, mini_a_dir):
    model, checkpoint = mini_files(mini_a_dir)
    entries = [
        {
            "video": str(clip),
            "video_id": f"dog{i}",
            "objects": [{"object_id": 1, "prompts": [_point()]}],
        }
        for i in range(16)
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", entries)
    out = tmp_path / "out"
    argv = [
        "label",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--model",
        model,
        "--checkpoint",
        checkpoint,
    ]
    argv += ["--workers", "1", "--num-cpus", "1", "--torch-threads", "1", "--no-progress"]
    environ = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    environ.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs", *argv],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not any((out / COMMITS_DIR).glob("*")):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no unit was committed in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # a unit is committed: the run is under way
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["status"] == "interrupted"
    # Units whose results reached the driver before Ctrl-C; their commits are all on disk.
    assert summary["units_done"] <= len(list((out / COMMITS_DIR).glob("*"))) < len(entries)


# ------------------------------------------------------------------------------ relative paths


@pytest.fixture(scope="module")
def cluster_elsewhere(tmp_path_factory):
    """A Ray instance started from its own folder: its workers' working directory is not the
    driver's, as on a cluster. Yields (address, that folder)."""
    import ray

    folder = tmp_path_factory.mktemp("cluster_cwd")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    before = os.getcwd()
    os.chdir(folder)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.chdir(before)
    yield ray.get_runtime_context().gcs_address, folder
    ray.shutdown()


@pytest.mark.slow
def test_relative_paths_with_ray_address_all_land_under_the_drivers_folder(
    cluster_elsewhere, tmp_path, clip, mini_a_dir
):
    address, cluster_cwd = cluster_elsewhere
    model, checkpoint = mini_files(mini_a_dir)
    work = tmp_path / "work"
    (work / "data" / "clips").mkdir(parents=True)
    (work / "weights").mkdir()
    shutil.copy(clip, work / "data" / "clips" / "dog.mp4")
    shutil.copy(model, work / "weights" / "config.json")
    shutil.copy(checkpoint, work / "weights" / "checkpoint.pt")
    entries = [
        {
            "video": "clips/dog.mp4",
            "video_id": vid,
            "objects": [{"object_id": 1, "prompts": [_point(frame)]}],
        }
        for vid, frame in (("a", 0), ("b", 4))
    ]
    write_jsonl(work / "data" / "m.jsonl", entries)  # video paths relative to the manifest
    argv = [
        "label",
        "--manifest",
        "data/m.jsonl",
        "--output",
        "out",
        "--model",
        "weights/config.json",
    ]
    argv += [
        "--checkpoint",
        "weights/checkpoint.pt",
        "--ray-address",
        address,
        "--torch-threads",
        "1",
    ]
    argv += ["--no-progress", "--run-id", "rel"]

    first = _jobs(argv, work)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "2 unit(s) labeled" in first.stdout
    assert sorted(set(read_masks(str(work / "out")).column("video_id").to_pylist())) == ["a", "b"]
    assert not (cluster_cwd / "out").exists() and not (cluster_cwd / "data").exists()
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["output"] == str(work / "out") and summary["manifest"] == str(
        work / "data" / "m.jsonl"
    )

    again = _jobs(argv, work)  # a re-run finds every unit committed
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 unit(s) labeled, 2 already committed" in again.stdout
