"""``python -m jobs submit``: send a label run to a Ray cluster as a Ray job
(``python -m jobs submit train ...``: a training run, see :mod:`jobs.submit_train`).

Takes the same arguments as ``jobs label`` plus the cluster's dashboard
address. The job's working directory is this project (uploaded by Ray); its
entrypoint is the equivalent ``python -m jobs label ...``. Prints the job id
and how to follow it; with --follow, streams its log (each line once, as the
job writes it) and exits with the label run's own exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

from jobs import label

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Never upload these with the job (Ray also honours .gitignore).
EXCLUDES = [
    ".venv",
    ".git",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "out",
    "build",
    "dist",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    label.add_arguments(parser)
    add_cluster_arguments(parser)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every ``submit``: where the cluster is and how to follow the job."""
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265",
        help="the Ray cluster's dashboard (Jobs API) address (default: $RAY_ADDRESS or http://127.0.0.1:8265)",
    )
    parser.add_argument(
        "--follow",
        "--wait",
        action="store_true",
        help="stream the job's log until it ends; exit with its status (--wait: the same)",
    )
    parser.add_argument(
        "--python", default="python", help="python executable on the cluster (default: python)"
    )
    parser.add_argument(
        "--submission-id", default=None, help="job id to use (default: chosen by Ray)"
    )


def entrypoint(args: argparse.Namespace) -> str:
    """The shell command the job runs: ``<python> -m jobs label ...`` with local paths made absolute."""
    args = label.absolute_paths(args)
    return shlex.join([args.python, "-m", "jobs", "label", *label.command_line(args)])


def runtime_env() -> dict:
    return {"working_dir": str(PROJECT_ROOT), "excludes": list(EXCLUDES)}


def run(args: argparse.Namespace) -> int:
    if not args.model:
        print(
            "error: no --model given (an official name such as sam2.1_hiera_tiny, or a config path)",
            file=sys.stderr,
        )
        return 1
    return submit(args, entrypoint(args))


def submit(args: argparse.Namespace, command: str) -> int:
    """Send ``command`` to the cluster at ``args.address`` as a Ray job (this project as its
    working directory); with ``--follow``, stream its log and return its exit status."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:  # pragma: no cover - ray[default] is a dependency
        print(f"error: the Ray Jobs API needs ray[default] ({err})", file=sys.stderr)
        return 1
    refusal = label.credentials_refusal(args.storage_options)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 1
    try:
        client = JobSubmissionClient(args.address)
        job_id = client.submit_job(
            entrypoint=command, runtime_env=runtime_env(), submission_id=args.submission_id
        )
    except Exception as err:
        print(
            f"error: could not submit to the Ray cluster at {args.address}: {type(err).__name__}: {err}\n"
            "(is the cluster up with its dashboard? try `ray status`)",
            file=sys.stderr,
        )
        return 1
    print(f"submitted job {job_id}")
    print(f"  entrypoint: {command}")
    print(f"  follow logs: ray job logs --address {args.address} --follow {job_id}")
    print(f"  status:      ray job status --address {args.address} {job_id}")
    if not args.follow:
        return 0
    return follow(client, job_id)


def follow(client, job_id: str, out: TextIO | None = None, poll_s: float = 1.0) -> int:
    """Print the job's log as it is written until the job ends; its label exit status (1 if unknown).

    The log comes through Ray's log tail (``tail_job_logs``: each chunk once, pushed by the
    dashboard), never by downloading the whole log again. Should that stream break off, the
    job goes on: this says so and waits for the job's end by its status alone.
    """
    from ray.job_submission import JobStatus

    out = out or sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as err:
        print(
            f"the log stream of job {job_id} broke off ({type(err).__name__}: {err}); waiting for "
            f"the job to end (its whole log: ray job logs {job_id})",
            file=sys.stderr,
        )
    # The stream closes when the job ends; its status can trail that by a moment.
    while not (info := client.get_job_info(job_id)).status.is_terminal():
        time.sleep(poll_s)
    print(f"job {job_id} {info.status.value}", file=out)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    code = getattr(info, "driver_exit_code", None)
    return int(code) if code in (1, 2) else 1
