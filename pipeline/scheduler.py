"""Which unit runs on which worker, and when: the scheduling rule of a labeling run.

Pure logic over a small :class:`Backend` protocol (start a worker, submit a unit attempt to
it, wait for events, cancel a worker), so every rule below is tested without Ray
(tests/test_scheduler.py drives it with a simulated backend); the Ray backend lives in
``pipeline.ray_backend``.

- At most ``queue_depth`` attempts are queued per worker, ``units_at_once`` of them running.
  Results are taken in completion order.
- A unit attempt's clock starts when its worker reports that it started it (a threaded worker
  may start queued attempts in any order), never from its place in a queue.
- Timeouts: an attempt that reports no new frame for ``stall_timeout_s``, or runs longer than
  ``max_unit_s``, is stopped (its worker with it); it counts a failed attempt, the others its
  worker held go back to the queue unchanged.
- A worker that dies fails the attempts it had started (if it reported none, the first
  ``units_at_once`` submitted: which one killed it cannot be told) and its queued ones go back.
- Whether a failed attempt runs again, and after how long, is :mod:`pipeline.retry`'s call.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import RunFatalError
from pipeline.plan import Unit
from pipeline.records import UnitFailure, UnitResult
from pipeline.retry import RetryPolicy, UnitTimeoutError, classify, describe


# -- events a backend reports ---------------------------------------------------------------
@dataclass(frozen=True)
class WorkerReady:
    worker: Hashable


@dataclass(frozen=True)
class WorkerStartFailed:
    """The worker came up but could not load the model; ``transient`` says whether another
    worker might succeed (a lost node) or not (a wrong checkpoint)."""

    worker: Hashable
    message: str
    transient: bool


@dataclass(frozen=True)
class WorkerLost:
    """The worker's process or node is gone, with everything it was running."""

    worker: Hashable
    error: BaseException


@dataclass(frozen=True)
class TaskProgress:
    """The worker has started the attempt and tracked ``frames`` frames of it so far."""

    task: Hashable
    frames: int


@dataclass(frozen=True)
class TaskDone:
    task: Hashable
    result: UnitResult


@dataclass(frozen=True)
class TaskFailed:
    """The attempt raised (the worker itself is fine)."""

    task: Hashable
    error: BaseException


Event = WorkerReady | WorkerStartFailed | WorkerLost | TaskProgress | TaskDone | TaskFailed


class Backend(Protocol):
    """Where attempts run. Ids are opaque to the scheduler."""

    def start_worker(self) -> Hashable:
        """Begin starting a worker; it reports :class:`WorkerReady` or a failure later."""

    def submit(self, worker: Hashable, unit: Unit, attempt: int) -> Hashable:
        """Queue one attempt of `unit` on a ready `worker`; returns the task id."""

    def wait(self, timeout_s: float) -> list[Event]:
        """Events since the last call, waiting up to `timeout_s` for at least one."""

    def cancel(self, worker: Hashable) -> None:
        """Stop `worker` and drop what it holds; no events follow for it."""


class Observer(Protocol):
    """Told what happens, for a progress display."""

    def unit_done(self, result: UnitResult) -> None: ...
    def unit_failed(self) -> None: ...
    def retried(self) -> None: ...
    def note(self, message: str) -> None: ...


class _Silent:
    def unit_done(self, result: UnitResult) -> None:
        pass

    def unit_failed(self) -> None:
        pass

    def retried(self) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Limits:
    """How much runs at once, and how long the scheduler waits for workers.

    workers: workers kept alive while work remains.
    units_at_once: attempts one worker runs concurrently (a threaded worker).
    queue_depth: attempts queued per worker, running ones included (>= units_at_once).
    worker_start_timeout_s: give up when no worker is ready this long after the first start.
    max_worker_starts: give up after this many starts (workers that keep dying); None: twice
        the workers plus every attempt the run may make.
    """

    workers: int = 1
    units_at_once: int = 1
    queue_depth: int = 2
    worker_start_timeout_s: float = 600.0
    max_worker_starts: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or self.units_at_once < 1:
            raise ValueError(
                f"workers and units_at_once must be >= 1, got {self.workers}, {self.units_at_once}"
            )
        if self.queue_depth < self.units_at_once:
            raise ValueError(
                f"queue_depth ({self.queue_depth}) must be >= units_at_once ({self.units_at_once})"
            )


@dataclass(frozen=True)
class Outcome:
    results: list[UnitResult]
    failures: list[UnitFailure]
    retries: int


@dataclass
class _Task:
    unit: Unit
    attempt: int
    worker: Hashable
    order: int
    started_at: float | None = None
    progress_at: float | None = None
    frames: int = -1


@dataclass
class _Worker:
    since: float
    ready: bool = False
    tasks: list[Hashable] = field(default_factory=list)  # in submission order


class Scheduler:
    """Runs `units` on `backend` until each is committed or failed for good."""

    def __init__(
        self,
        backend: Backend,
        units: list[Unit],
        policy: RetryPolicy,
        limits: Limits,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backend = backend
        self.policy = policy
        self.limits = limits
        self.observer = observer or _Silent()
        self.clock = clock
        self._order = itertools.count()
        # (due time, order, unit, attempt): due units in plan order, retries after their backoff.
        self._pending: list[tuple[float, int, Unit, int]] = [
            (0.0, next(self._order), u, 1) for u in units
        ]
        self._workers: dict[Hashable, _Worker] = {}
        self._tasks: dict[Hashable, _Task] = {}
        self.results: list[UnitResult] = []
        self.failures: list[UnitFailure] = []
        self.retries = 0
        self.starts = 0
        self.max_starts = limits.max_worker_starts or (
            2 * limits.workers + len(units) * policy.max_attempts
        )

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Schedule until nothing is pending or running; cancels its workers on the way out
        (also when interrupted or fatal)."""
        try:
            for _ in range(min(self.limits.workers, len(self._pending))):
                self._start_worker()
            while self._pending or self._tasks:
                self._submit()
                for event in self.backend.wait(self._wait_timeout()):
                    self._handle(event)
                self._check_timeouts()
                self._check_starting()
                if not self._workers and (self._pending or self._tasks):
                    self._start_worker()
        finally:
            for worker in list(self._workers):
                self.backend.cancel(worker)
            self._workers.clear()
        return Outcome(list(self.results), list(self.failures), self.retries)

    def _wait_timeout(self) -> float:
        timeout = 1.0
        if self._pending and not self._tasks:
            timeout = min(timeout, max(0.01, self._pending[0][0] - self.clock()))
        return timeout

    def _handle(self, event: Event) -> None:
        if isinstance(event, WorkerReady):
            if event.worker in self._workers:
                self._workers[event.worker].ready = True
        elif isinstance(event, WorkerStartFailed):
            self._on_start_failed(event)
        elif isinstance(event, WorkerLost):
            if event.worker in self._workers:
                self.observer.note(f"a worker was lost ({describe(event.error)[0]})")
                self._retire(event.worker, event.error)
        elif isinstance(event, TaskProgress):
            self._on_progress(event)
        elif isinstance(event, TaskDone):
            task = self._forget(event.task)
            if task is not None:
                self.results.append(event.result)
                self.observer.unit_done(event.result)
        elif isinstance(event, TaskFailed):
            task = self._forget(event.task)
            if task is not None:
                self._failed(task, event.error)

    # -- workers ----------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self.starts >= self.max_starts:
            raise RunFatalError(
                f"started {self.starts} workers and they keep dying; giving up "
                "(check `ray status` and the worker logs)"
            )
        self.starts += 1
        self._workers[self.backend.start_worker()] = _Worker(since=self.clock())

    def _on_start_failed(self, event: WorkerStartFailed) -> None:
        if event.worker not in self._workers:
            return
        del self._workers[event.worker]
        self.backend.cancel(event.worker)
        message = f"worker could not load the model: {event.message}"
        if not event.transient:
            raise RunFatalError(message)
        self.observer.note(message + "; starting another")
        self._start_worker()

    def _retire(self, worker: Hashable, error: BaseException, culprit: Hashable = None) -> None:
        """`worker` is gone or being stopped. Its running attempts fail with `error` (only
        `culprit`'s when one is named); the rest go back to the queue unchanged."""
        state = self._workers.pop(worker, None)
        self.backend.cancel(worker)
        if state is None:
            return
        tasks = [t for t in state.tasks if t in self._tasks]
        started = [t for t in tasks if self._tasks[t].started_at is not None]
        running = started or tasks[: self.limits.units_at_once]
        for task_id in tasks:
            task = self._tasks.pop(task_id)
            if task_id in running and (culprit is None or task_id == culprit):
                self._failed(task, error)
            else:
                heapq.heappush(self._pending, (0.0, task.order, task.unit, task.attempt))
        if self._pending or self._tasks:
            self._start_worker()

    def _check_starting(self) -> None:
        starting = [w.since for w in self._workers.values() if not w.ready]
        if not starting or any(w.ready for w in self._workers.values()):
            return
        if self.clock() - min(starting) > self.limits.worker_start_timeout_s:
            raise RunFatalError(
                f"no worker could start within {self.limits.worker_start_timeout_s:g} s; "
                "check `ray status` (are the CPUs/GPUs each worker asks for free?)"
            )

    # -- attempts ---------------------------------------------------------------------------
    def _submit(self) -> None:
        now = self.clock()
        # While workers are still starting, the ready ones take only what they run at once,
        # so early workers do not queue up units that a worker about to start could run.
        starting = any(not w.ready for w in self._workers.values())
        depth = self.limits.units_at_once if starting else self.limits.queue_depth
        while self._pending and self._pending[0][0] <= now:
            free = [
                (len(w.tasks), i, wid)
                for i, (wid, w) in enumerate(self._workers.items())
                if w.ready and len(w.tasks) < depth
            ]
            if not free:
                return
            _, _, worker = min(free)
            _, order, unit, attempt = heapq.heappop(self._pending)
            task_id = self.backend.submit(worker, unit, attempt)
            self._workers[worker].tasks.append(task_id)
            self._tasks[task_id] = _Task(unit, attempt, worker, order)

    def _on_progress(self, event: TaskProgress) -> None:
        task = self._tasks.get(event.task)
        if task is None:
            return
        now = self.clock()
        if task.started_at is None:
            task.started_at = now
        if event.frames != task.frames:
            task.frames = event.frames
            task.progress_at = now

    def _check_timeouts(self) -> None:
        stall, cap = self.policy.stall_timeout_s, self.policy.max_unit_s
        if stall is None and cap is None:
            return
        now = self.clock()
        for task_id, task in list(self._tasks.items()):
            if task.started_at is None or task_id not in self._tasks:
                continue
            reason = None
            if stall is not None and now - task.progress_at > stall:
                reason = f"made no progress for {stall:g} s (stalled after {task.frames} frames)"
            elif cap is not None and now - task.started_at > cap:
                reason = f"ran past its {cap:g} s limit"
            if reason is not None:
                error = UnitTimeoutError(f"unit {task.unit.unit_id} {reason}")
                self._retire(task.worker, error, culprit=task_id)

    def _forget(self, task_id: Hashable) -> _Task | None:
        task = self._tasks.pop(task_id, None)
        if task is not None and task.worker in self._workers:
            self._workers[task.worker].tasks.remove(task_id)
        return task

    def _failed(self, task: _Task, error: BaseException) -> None:
        etype, message = describe(error)
        if self.policy.should_retry(error, task.attempt):
            self.retries += 1
            self.observer.retried()
            self.observer.note(
                f"unit {task.unit.unit_id} attempt {task.attempt} failed "
                f"({etype}: {message[:200]}); retrying"
            )
            due = self.clock() + self.policy.backoff(task.attempt)
            heapq.heappush(self._pending, (due, next(self._order), task.unit, task.attempt + 1))
            return
        unit = task.unit
        self.failures.append(
            UnitFailure(
                unit_id=unit.unit_id,
                video=unit.job.video,
                video_id=unit.video_id,
                object_ids=tuple(unit.object_ids),
                location=unit.job.location,
                attempts=task.attempt,
                error_type=etype,
                transient=classify(error) == "transient",
                reason=message,
            )
        )
        self.observer.unit_failed()


def default_queue_depth(workers: int, units_at_once: int, max_in_flight: int | None) -> int:
    """Attempts queued per worker: enough that a worker never idles between units (two per
    worker, or `max_in_flight` spread over the workers), plus the ones it runs at once."""
    total = max_in_flight or 2 * workers
    return max(1, math.ceil(total / workers)) + units_at_once - 1
