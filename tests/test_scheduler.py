"""The scheduling rule (pipeline.scheduler) on a simulated backend: no Ray, virtual time."""

from __future__ import annotations

import pytest
from sim_backend import Clock, Script, SimBackend, make_units

from pipeline.errors import RunFatalError
from pipeline.retry import RetryPolicy
from pipeline.scheduler import Limits, Scheduler


def _run(backend, units, policy=None, limits=None):
    policy = policy or RetryPolicy(max_attempts=3, backoff_s=0.5, stall_timeout_s=None)
    scheduler = Scheduler(backend, units, policy, limits or Limits(), clock=backend.clock)
    return scheduler, scheduler.run()


def test_every_unit_is_committed_once_in_completion_order():
    clock = Clock()
    units = make_units(6)
    scripts = {(f"u{i}", 1): Script(seconds=6 - i) for i in range(6)}
    backend = SimBackend(clock, scripts)
    _, outcome = _run(backend, units, limits=Limits(workers=3, queue_depth=2))
    assert sorted(r.unit_id for r in outcome.results) == [u.unit_id for u in units]
    assert outcome.failures == [] and outcome.retries == 0
    # u2 (4 s) on the third worker finishes before u0 (6 s) on the first: completion order.
    order = [r.unit_id for r in outcome.results]
    assert order.index("u2") < order.index("u0")
    assert backend.cancelled  # workers are stopped when the run ends


def test_threaded_workers_starting_queued_units_out_of_order_are_not_timed_out():
    """A threaded worker may start its queued attempts in any order; the clock of an attempt
    starts when the worker reports it started, so queued ones never run out of time."""
    clock = Clock()
    units = make_units(12)
    backend = SimBackend(clock, {}, units_at_once=3, seed=3)
    backend.scripts = {(u.unit_id, 1): Script(seconds=4.0, frames=8) for u in units}
    policy = RetryPolicy(max_attempts=1, stall_timeout_s=2.0, max_unit_s=5.0)
    _, outcome = _run(backend, units, policy, Limits(workers=1, units_at_once=3, queue_depth=6))
    assert outcome.failures == [] and outcome.retries == 0
    assert len(outcome.results) == 12
    submitted = [s[0] for s in backend.submissions]
    assert backend.start_order != submitted  # the simulated worker really started out of order


def test_a_long_video_is_judged_by_its_progress_not_its_length():
    clock = Clock()
    units = make_units(1)
    backend = SimBackend(clock, {("u0", 1): Script(seconds=300.0, frames=3000)})
    policy = RetryPolicy(max_attempts=1, stall_timeout_s=5.0)
    _, outcome = _run(backend, units, policy)
    assert [r.unit_id for r in outcome.results] == ["u0"] and outcome.failures == []


def test_a_stalled_unit_is_retried_and_the_others_on_its_worker_are_requeued_unchanged():
    clock = Clock()
    units = make_units(2)
    scripts = {("u0", 1): Script(end="stall", stall_after=1.0), ("u1", 1): Script(seconds=20.0)}
    backend = SimBackend(clock, scripts, units_at_once=2)
    policy = RetryPolicy(max_attempts=2, backoff_s=0.1, stall_timeout_s=3.0)
    scheduler, outcome = _run(
        backend, units, policy, Limits(workers=1, units_at_once=2, queue_depth=2)
    )
    assert sorted(r.unit_id for r in outcome.results) == ["u0", "u1"]
    assert {(r.unit_id, r.attempt) for r in outcome.results} == {("u0", 2), ("u1", 1)}
    assert outcome.retries == 1 and outcome.failures == []
    assert backend.started_workers == 2  # the stalled worker was replaced


def test_the_hard_cap_fails_a_unit_that_keeps_progressing_too_long():
    clock = Clock()
    units = make_units(1)
    scripts = {("u0", a): Script(seconds=30.0, frames=300) for a in (1, 2)}
    policy = RetryPolicy(max_attempts=2, backoff_s=0.1, stall_timeout_s=5.0, max_unit_s=10.0)
    _, outcome = _run(SimBackend(clock, scripts), units, policy)
    assert outcome.results == []
    [failure] = outcome.failures
    assert failure.attempts == 2 and failure.transient
    assert failure.error_type == "UnitTimeoutError" and "10 s limit" in failure.reason


def test_a_lost_worker_fails_only_its_running_attempt_and_is_replaced():
    clock = Clock()
    units = make_units(4)
    backend = SimBackend(clock, {("u1", 1): Script(seconds=1.0, end="die")})
    scheduler, outcome = _run(backend, units, limits=Limits(workers=1, queue_depth=3))
    assert sorted(r.unit_id for r in outcome.results) == ["u0", "u1", "u2", "u3"]
    attempts = {r.unit_id: r.attempt for r in outcome.results}
    assert attempts == {"u0": 1, "u1": 2, "u2": 1, "u3": 1}  # queued u2 did not pay an attempt
    assert outcome.retries == 1 and backend.started_workers == 2


def test_permanent_errors_fail_at_once_and_transient_ones_use_every_attempt():
    clock = Clock()
    units = make_units(2)
    scripts = {
        ("u0", 1): Script(end="raise", error=ValueError("prompt past the end: m.jsonl line 1"))
    }
    scripts.update(
        {("u1", a): Script(end="raise", error=OSError("storage hiccup")) for a in (1, 2, 3)}
    )
    backend = SimBackend(clock, scripts)
    _, outcome = _run(backend, units, limits=Limits(workers=2))
    by_unit = {f.unit_id: f for f in outcome.failures}
    assert by_unit["u0"].attempts == 1 and not by_unit["u0"].transient
    assert (
        by_unit["u0"].location == "m.jsonl line 1" and "prompt past the end" in by_unit["u0"].reason
    )
    assert by_unit["u1"].attempts == 3 and by_unit["u1"].transient
    assert outcome.retries == 2


def test_retries_wait_for_their_backoff():
    clock = Clock()
    units = make_units(1)
    backend = SimBackend(clock, {("u0", 1): Script(seconds=1.0, end="raise", error=OSError("x"))})
    policy = RetryPolicy(max_attempts=2, backoff_s=5.0, backoff_max_s=5.0, stall_timeout_s=None)
    _run(backend, units, policy)
    (_, _, first), (_, attempt, second) = backend.submissions
    assert attempt == 2 and second - first >= 1.0 + 5.0 - 0.2


def test_a_worker_that_cannot_load_the_model_makes_the_run_fatal():
    clock = Clock()
    backend = SimBackend(clock, start_failures=["permanent"])
    with pytest.raises(RunFatalError, match="could not load the model"):
        _run(backend, make_units(2))
    assert backend.workers == {}  # nothing left running


def test_a_transient_start_failure_starts_another_worker():
    clock = Clock()
    backend = SimBackend(clock, start_failures=["transient"])
    _, outcome = _run(backend, make_units(2))
    assert len(outcome.results) == 2 and backend.started_workers == 2


def test_no_worker_ready_in_time_is_fatal():
    clock = Clock()
    backend = SimBackend(clock, start_delay=1e9)
    with pytest.raises(RunFatalError, match="no worker could start within 30 s"):
        _run(backend, make_units(1), limits=Limits(worker_start_timeout_s=30.0))
    assert 30.0 < clock.now < 32.0


def test_workers_that_keep_dying_end_the_run():
    clock = Clock()
    units = make_units(1)
    scripts = {("u0", a): Script(seconds=0.5, end="die") for a in range(1, 10)}
    backend = SimBackend(clock, scripts)
    policy = RetryPolicy(max_attempts=100, backoff_s=0.0, stall_timeout_s=None)
    with pytest.raises(RunFatalError, match="keep dying"):
        _run(backend, units, policy, Limits(max_worker_starts=4))
    assert backend.started_workers == 4


def test_in_flight_attempts_stay_within_the_queue_depth():
    clock = Clock()
    units = make_units(20)
    backend = SimBackend(
        clock, {(u.unit_id, 1): Script(seconds=1.0 + i % 3) for i, u in enumerate(units)}
    )
    scheduler = Scheduler(
        backend, units, RetryPolicy(), Limits(workers=2, queue_depth=2), clock=clock
    )
    peak = 0
    wait = backend.wait

    def watching_wait(timeout):
        nonlocal peak
        peak = max(peak, sum(len(w.queue) + len(w.running) for w in backend.workers.values()))
        return wait(timeout)

    backend.wait = watching_wait
    outcome = scheduler.run()
    assert len(outcome.results) == 20 and peak == 4
