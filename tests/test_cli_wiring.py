"""The command line's wiring, without a cluster: help is fast (no torch or Ray imported), ``submit``
takes every ``label`` option from the one table, and ``submit --follow`` prints the job's log
incrementally, each line once, until the job ends."""

from __future__ import annotations

import argparse
import io
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.job_submission import JobStatus

from jobs import label, submit
from jobs.__main__ import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "pyarrow", "av")


def _imported_by(argv: list[str]) -> set[str]:
    """Top-level packages that ``python -m jobs ARGV`` imports, read from ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobs", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m jobs" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines[1:]}


def test_top_level_help_imports_none_of_the_commands():
    imported = _imported_by(["--help"])
    assert not imported & {*HEAVY, "numpy", "pipeline", "sam2_core"}, sorted(imported)


# jobs.train builds its options from the training records (torch) and is left out here.
@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("train", "submit-train")])
def test_command_help_imports_neither_torch_nor_ray(command):
    imported = _imported_by([command, "--help"])
    assert not imported & {"torch", "ray"}, sorted(imported & {"torch", "ray"})


def test_label_and_submit_help_import_no_heavy_package():
    for command in ("label", "submit"):
        imported = _imported_by([command, "--help"])
        assert not imported & set(HEAVY), (command, sorted(imported & set(HEAVY)))


# ------------------------------------------------------------------------- one option table


def _sample_argv() -> list[str]:
    """Every label option with a value its type accepts (and that is not its default)."""
    argv = []
    for flag, kwargs in label.OPTIONS:
        if kwargs.get("action") == "store_true":
            argv.append(flag)
            continue
        if "choices" in kwargs:
            argv += [flag, next(c for c in kwargs["choices"] if c != kwargs.get("default"))]
            continue
        kind = kwargs.get("type")
        if kind is None:
            argv += [flag, f"value-of{flag}"]
            continue
        for text in ("7", '{"endpoint_url": "http://127.0.0.1:9"}'):
            try:
                kind(text)
            except argparse.ArgumentTypeError:
                continue
            argv += [flag, text]
            break
        else:
            pytest.fail(f"no sample value for {flag}")
    return argv


def test_submit_accepts_every_label_option_and_rebuilds_the_label_command_line():
    argv = _sample_argv()
    label_args = build_parser("label")[0].parse_args(["label", *argv])
    submit_args = build_parser("submit")[0].parse_args(["submit", *argv])
    dests = [flag.lstrip("-").replace("-", "_") for flag, _ in label.OPTIONS]
    assert len(dests) == len(set(dests))
    for dest in dests:
        assert getattr(submit_args, dest) == getattr(label_args, dest), dest
        assert getattr(label_args, dest) != label.OPTIONS[dests.index(dest)][1].get("default")
    rebuilt = build_parser("label")[0].parse_args(["label", *label.command_line(submit_args)])
    assert {d: getattr(rebuilt, d) for d in dests} == {d: getattr(label_args, d) for d in dests}


def test_demo_takes_its_shared_options_from_the_label_table(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--storage-options", "[1]"])
    assert "argument --storage-options: must be a JSON object" in capsys.readouterr().err
    args = build_parser("demo")[0].parse_args(["demo", "--storage-options", '{"anon": true}'])
    assert args.storage_options == {"anon": True} and args.workers == 2


# ------------------------------------------------------------------------- submit --follow


class FakeJobClient:
    """The part of Ray's JobSubmissionClient that ``follow`` uses: a log tail that yields the
    job's log in chunks and ends with the job, and the job's status (which may trail the tail's
    end by a poll or two, as the real one can)."""

    def __init__(self, chunks: list[str], statuses: list[JobStatus], exit_code: int | None = None):
        self.chunks = chunks
        self.statuses = list(statuses)
        self.exit_code = exit_code
        self.tails = 0
        self.info_calls = 0

    async def tail_job_logs(self, job_id: str):
        self.tails += 1
        for chunk in self.chunks:
            yield chunk

    def get_job_info(self, job_id: str):
        self.info_calls += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return SimpleNamespace(status=status, driver_exit_code=self.exit_code)

    def get_job_logs(self, job_id: str) -> str:
        raise AssertionError("follow must not download the whole log")


def test_follow_prints_each_log_line_once_and_stops_when_the_job_ends():
    client = FakeJobClient(
        ["run r1: starting\n", "unit a done\nunit b", " done\n", "2 unit(s) labeled\n"],
        [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED],
    )
    out = io.StringIO()
    assert submit.follow(client, "job-1", out=out, poll_s=0.0) == 0
    lines = out.getvalue().splitlines()
    assert lines == [
        "run r1: starting",
        "unit a done",
        "unit b done",
        "2 unit(s) labeled",
        "job job-1 SUCCEEDED",
    ]
    assert client.tails == 1 and client.info_calls == 3


def test_follow_exits_with_the_label_runs_status_and_survives_a_broken_stream(capsys):
    failed = FakeJobClient(["1 failed\n"], [JobStatus.FAILED], exit_code=2)
    out = io.StringIO()
    assert submit.follow(failed, "job-2", out=out, poll_s=0.0) == 2
    assert out.getvalue().splitlines() == ["1 failed", "job job-2 FAILED"]

    class BrokenTail(FakeJobClient):
        async def tail_job_logs(self, job_id: str):
            yield "first line\n"
            raise RuntimeError("WebSocket connection closed unexpectedly")

    broken = BrokenTail([], [JobStatus.RUNNING, JobStatus.STOPPED])
    out = io.StringIO()
    assert submit.follow(broken, "job-3", out=out, poll_s=0.0) == 1
    assert out.getvalue().splitlines() == ["first line", "job job-3 STOPPED"]
    assert "log stream of job job-3 broke off" in capsys.readouterr().err


def test_submit_train_rebuilds_the_train_command_line_with_local_paths_absolute(tmp_path):
    from jobs import submit_train

    (tmp_path / "davis").mkdir()
    argv = [
        "--config",
        "sam2.1_hiera_tiny",
        "--data",
        "davis:davis",
        "--data",
        "run:s3://bucket/labels",
        "--output",
        "s3://bucket/runs/a",
        "--steps",
        "7",
        "--clip-len-schedule",
        "0:4,300:8",
        "--freeze",
        "image_encoder",
        "--freeze",
        "sam_prompt_encoder",
        "--storage-options",
        '{"endpoint_url": "http://127.0.0.1:9"}',
        "--no-autocast",
        "--workers",
        "2",
    ]
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        args = build_parser("submit-train")[0].parse_args(["submit-train", *argv])
        command = shlex.split(submit_train.entrypoint(args))
    finally:
        os.chdir(here)
    assert command[:4] == ["python", "-m", "jobs", "train"]
    rebuilt = build_parser("train")[0].parse_args(["train", *command[4:]])
    original = build_parser("train")[0].parse_args(["train", *argv])
    original.data[0] = type(original.data[0])("davis", str(tmp_path / "davis"))
    assert vars(rebuilt) == vars(original)


def test_submit_train_is_the_submit_train_command(capsys):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    address = f"http://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    status = main(["submit", "train", "--config", "x", "--output", "o", "--address", address])
    assert status == 1 and f"could not submit to the Ray cluster at {address}" in (
        capsys.readouterr().err
    )


def test_submit_train_refuses_credentials_in_storage_options(capsys):
    options = '{"endpoint_url": "http://127.0.0.1:9", "secret": "s3cr3t"}'
    argv = ["submit", "train", "--config", "x", "--output", "s3://b/run", "--storage-options"]
    assert main([*argv, options, "--address", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "secret look like credentials" in err and "s3cr3t" not in err
    assert "could not submit" not in err  # refused before reaching for the cluster
