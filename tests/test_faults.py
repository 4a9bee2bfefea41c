"""Faults during a run: the retry rule, a worker killed mid-unit, a node removed mid-unit,
a storage error, a unit past its deadline. Each run ends with the clean run's table:
no lost and no duplicated rows."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from fault_workers import Fault, faulty_worker, tight_memory_worker
from labeling_helpers import (
    assert_same_rows,
    demo_entries,
    make_clips,
    reference_table,
    run_config,
    sorted_masks,
    write_jsonl,
)

from pipeline.coordinator import run_labeling
from pipeline.errors import InputError
from pipeline.retry import (
    BUG,
    PERMANENT,
    TRANSIENT,
    RetryPolicy,
    UnitTimeoutError,
    classify,
    describe,
)
from pipeline.video import VideoDecodeError, open_video

# ---------------------------------------------------------------- the retry rule


def _ray_errors():
    import ray.exceptions as rex

    return [
        rex.ActorDiedError(),
        rex.WorkerCrashedError(),
        rex.NodeDiedError("node gone"),
        rex.ObjectLostError("0" * 56, None, ""),
    ]


@pytest.mark.parametrize("index", range(4))
def test_ray_system_errors_are_transient(index):
    assert classify(_ray_errors()[index]) == TRANSIENT


@pytest.mark.parametrize(
    "error, kind",
    [
        (OSError("connection reset"), TRANSIENT),
        (TimeoutError("read timed out"), TRANSIENT),
        (UnitTimeoutError("deadline"), TRANSIENT),
        (FileNotFoundError("video not found: s3://b/x.mp4"), PERMANENT),
        (PermissionError("denied"), PERMANENT),
        (VideoDecodeError("corrupt"), PERMANENT),
        (InputError("prompt frame 40 is past the end"), PERMANENT),
        (RuntimeError("a bug"), BUG),
    ],
)
def test_error_classes(error, kind):
    assert classify(error) == kind


def _as_task_error(error: BaseException):
    """`error` raised here and wrapped the way Ray hands a worker's exception to the driver."""
    import traceback

    from ray.exceptions import RayTaskError

    try:
        raise error
    except BaseException as err:
        return RayTaskError("run", traceback.format_exc(), err).as_instanceof_cause()


def test_device_out_of_memory_is_transient_like_host_memory():
    # Whether a unit fits on the GPU depends on what else shares it at that moment.
    import torch

    policy = RetryPolicy(max_attempts=3)
    for error in (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),  # older torch, raised from a kernel launch
        MemoryError(),
    ):
        assert classify(error) == TRANSIENT, error
        assert classify(_as_task_error(error)) == TRANSIENT, error
        assert policy.should_retry(_as_task_error(error), 1), error


def test_unwrapped_builtin_errors_are_reported_as_bugs_not_bad_input():
    policy = RetryPolicy(max_attempts=3)
    for error in (KeyError("object_ids"), TypeError("unsupported operand"), ValueError("shape")):
        wrapped = _as_task_error(error)
        assert classify(error) == classify(wrapped) == BUG, error
        assert not policy.should_retry(wrapped, 1)
        etype, reason = describe(wrapped)
        assert etype == type(error).__name__
        assert "looks like a bug" in reason and "test_faults.py" in reason, reason
        assert str(error).strip("'") in reason


def test_undecodable_input_is_permanent_and_its_failure_names_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        open_video(str(empty))
    wrapped = _as_task_error(caught.value)
    assert classify(wrapped) == PERMANENT
    assert not RetryPolicy(max_attempts=3).should_retry(wrapped, 1)
    etype, reason = describe(wrapped)
    assert etype == "VideoDecodeError" and str(empty) in reason and "bug" not in reason


def test_object_store_network_errors_are_transient():
    from aiohttp import ServerDisconnectedError
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == TRANSIENT
    assert classify(ConnectionClosedError(endpoint_url="http://127.0.0.1:1")) == TRANSIENT
    assert classify(ServerDisconnectedError()) == TRANSIENT


def test_worker_errors_are_classified_by_their_cause():
    from ray.exceptions import RayTaskError

    def raised(error):
        try:
            raise error
        except Exception as err:
            return RayTaskError("run", "traceback", err).as_instanceof_cause()

    assert classify(raised(OSError("storage hiccup"))) == TRANSIENT
    assert classify(raised(VideoDecodeError("broken"))) == PERMANENT


def test_attempts_and_backoff():
    policy = RetryPolicy(max_attempts=3, backoff_s=1.0, backoff_max_s=3.0)
    assert policy.should_retry(OSError("x"), 1) and policy.should_retry(OSError("x"), 2)
    assert not policy.should_retry(OSError("x"), 3)
    assert not policy.should_retry(InputError("x"), 1)
    waits = [policy.backoff(k) for k in (1, 2, 3, 4)]
    assert 1.0 <= waits[0] <= 1.25 and 2.0 <= waits[1] <= 2.5 and 3.0 <= waits[2] <= 3.75
    assert 3.0 <= waits[3] <= 3.75  # capped
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# ---------------------------------------------------------------- faults in real runs


@pytest.fixture(scope="module")
def fault_inputs(tmp_path_factory, videos_dir, mini_a_dir):
    folder = tmp_path_factory.mktemp("faults")
    clips = make_clips(videos_dir, folder / "clips")
    manifest = write_jsonl(folder / "manifest.jsonl", demo_entries(clips))
    return folder, manifest, reference_table(mini_a_dir, manifest)


@pytest.fixture(scope="module")
def cluster():
    """A 3-node Ray cluster: a head without CPUs (the driver only) and two 2-CPU worker nodes,
    so the two workers land on different nodes and either node can host a replacement."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_worker_killed_mid_unit_and_storage_error_are_retried(
    cluster, fault_inputs, mini_a_dir, tmp_path
):
    folder, manifest, expected = fault_inputs
    faults = (
        Fault(
            video_id="dog", kind="exit", attempt=1, at_frame=8
        ),  # the worker process dies mid-unit
        Fault(video_id="coffee", kind="oserror", attempt=1),  # the first commit fails
    )
    out = tmp_path / "out"
    result = run_labeling(run_config(manifest, out, mini_a_dir), faulty_worker(*faults))
    assert result.exit_code == 0, result.failures
    assert result.summary.retries == 2
    assert_same_rows(sorted_masks(out), expected)


@pytest.mark.slow
def test_summary_reports_units_redone_with_smaller_object_chunks_after_device_oom(
    cluster, fault_inputs, mini_a_dir, tmp_path
):
    # memory attention "runs out of device memory" with more than one object at once
    folder, manifest, expected = fault_inputs
    out = tmp_path / "out"
    result = run_labeling(run_config(manifest, out, mini_a_dir), tight_memory_worker(1))
    assert result.exit_code == 0, result.failures
    assert result.summary.retries == 0  # the tracker retried the frame, not the scheduler
    chunks = json.loads((out / "summary.json").read_text())["object_chunks"]
    commits = [json.loads(p.read_text())["metadata"] for p in (out / "_commits").glob("*.json")]
    two_objects = sorted(c["unit_id"] for c in commits if len(c["object_ids"]) == 2)
    assert two_objects and len(two_objects) < len(commits)
    assert (chunks["largest"], chunks["smallest"], chunks["max_per_frame"]) == (2, 1, 2)
    assert chunks["oom_retries"] == len(two_objects)  # the first tracked frame of each, once
    assert chunks["units_after_oom"] == [
        {"unit_id": unit_id, "retries": 1, "chunks": [1]} for unit_id in two_objects
    ]
    assert sorted_masks(out).num_rows == expected.num_rows


@pytest.mark.slow
def test_unit_past_its_deadline_is_stopped_and_retried(cluster, fault_inputs, mini_a_dir, tmp_path):
    folder, manifest, expected = fault_inputs
    faults = (Fault(video_id="bedroom", kind="pause", attempt=1, at_frame=3, seconds=120),)
    out = tmp_path / "out"
    started = time.monotonic()
    config = run_config(
        manifest,
        out,
        mini_a_dir,
        retry=RetryPolicy(max_attempts=2, backoff_s=0.1, stall_timeout_s=8.0),
    )
    result = run_labeling(config, faulty_worker(*faults))
    assert time.monotonic() - started < 100  # did not wait for the paused worker
    assert result.exit_code == 0, result.failures
    assert result.summary.retries == 1
    assert_same_rows(sorted_masks(out), expected)


@pytest.mark.slow
def test_permanent_failure_is_not_retried(cluster, fault_inputs, mini_a_dir, tmp_path):
    folder, manifest, _ = fault_inputs
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    entries[2]["objects"][0]["prompts"][0]["frame"] = 24  # one past the last frame
    empty = tmp_path / "empty.mp4"  # a zero-byte video was retried as a storage error
    empty.write_bytes(b"")
    entries.append({**entries[0], "video": str(empty), "video_id": "empty"})
    bad = write_jsonl(tmp_path / "m.jsonl", entries)
    result = run_labeling(run_config(bad, tmp_path / "out", mini_a_dir))
    assert result.exit_code == 2
    failures = {f.video_id: f for f in result.failures}
    assert sorted(failures) == ["bedroom", "empty"]
    assert failures["bedroom"].attempts == failures["empty"].attempts == 1
    assert failures["bedroom"].error_type == "InputError"
    assert "past the end" in failures["bedroom"].reason
    assert failures["empty"].error_type == "VideoDecodeError"
    assert f"{empty}: the file is empty" in failures["empty"].reason
    assert result.summary.units_done == 2 and result.summary.retries == 0


@pytest.mark.slow
def test_node_removed_mid_unit_converges_to_the_clean_table(
    cluster, fault_inputs, mini_a_dir, tmp_path
):
    _, manifest, expected = fault_inputs
    marker = tmp_path / "paused.json"
    # The dog unit's first attempt stops at frame 5 and says on which node it is.
    faults = (
        Fault(video_id="dog", kind="pause", attempt=1, at_frame=5, seconds=300, marker=str(marker)),
    )
    out = tmp_path / "out"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_labeling(
                run_config(manifest, out, mini_a_dir), faulty_worker(*faults)
            )
        except BaseException as err:  # surfaced below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert thread.is_alive(), outcome
        assert time.monotonic() < deadline, "the paused unit never started"
        time.sleep(0.2)
    node_id = json.loads(marker.read_text())["node_id"]
    (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
    cluster.remove_node(node)
    thread.join(timeout=300)
    cluster.add_node(num_cpus=2)  # back to three nodes for the module's other tests
    assert not thread.is_alive(), "the run did not finish after the node was removed"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.exit_code == 0, result.failures
    assert result.summary.retries >= 1
    assert_same_rows(sorted_masks(out), expected)


@pytest.mark.slow
def test_units_run_two_at_a_time_survive_a_dead_worker_and_a_late_unit(
    cluster, fault_inputs, mini_a_dir, tmp_path
):
    folder, manifest, expected = fault_inputs
    faults = (
        Fault(video_id="dog", kind="exit", attempt=1, at_frame=8),  # kills both units it runs
        Fault(video_id="bedroom", kind="pause", attempt=1, at_frame=3, seconds=120),
    )
    out = tmp_path / "out"
    config = run_config(
        manifest,
        out,
        mini_a_dir,
        videos_per_worker=2,
        retry=RetryPolicy(max_attempts=3, backoff_s=0.1, stall_timeout_s=8.0),
    )
    result = run_labeling(config, faulty_worker(*faults))
    assert result.exit_code == 0, result.failures
    # dog's crash fails whatever ran beside it; bedroom's pause fails bedroom alone, unless
    # bedroom was the one beside dog (its retry has no pause).
    assert 2 <= result.summary.retries <= 3
    assert_same_rows(sorted_masks(out), expected)
