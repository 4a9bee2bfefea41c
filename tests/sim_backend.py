"""A simulated scheduler backend on a virtual clock, for tests of pipeline.scheduler without Ray.

Each attempt follows a :class:`Script` (how long it runs, how many frames it reports, how it
ends). Workers start after ``start_delay`` seconds and run up to ``units_at_once`` attempts
concurrently; with more than one they pick queued attempts in a seeded random order, as a
threaded Ray actor may. Time advances in steps of ``dt`` only inside :meth:`wait`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from pipeline.manifest import VideoJob
from pipeline.plan import Unit
from pipeline.records import UnitResult
from pipeline.scheduler import (
    Event,
    TaskDone,
    TaskFailed,
    TaskProgress,
    WorkerLost,
    WorkerReady,
    WorkerStartFailed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Script:
    """One attempt: runs `seconds`, reporting `frames` evenly; then ends as `end` says:
    "done", "raise" (raises `error`), "die" (the worker process dies), or "stall" (stops
    reporting progress after `stall_after` seconds and never ends)."""

    seconds: float = 2.0
    frames: int = 10
    end: str = "done"
    error: BaseException | None = None
    stall_after: float = 1.0


@dataclass
class _Running:
    task: int
    unit: Unit
    attempt: int
    started: float
    reported: int = -1


@dataclass
class _SimWorker:
    ready_at: float
    fails_to_start: str | None = None  # "permanent" / "transient"
    announced: bool = False
    queue: list = field(default_factory=list)  # (task, unit, attempt) not yet started
    running: list = field(default_factory=list)


def make_units(count: int) -> list[Unit]:
    return [
        Unit(f"u{i}", VideoJob(f"v{i}.mp4", f"v{i}", (), f"m.jsonl line {i + 1}"), (1,))
        for i in range(count)
    ]


class SimBackend:
    def __init__(
        self,
        clock: Clock,
        scripts: dict[tuple[str, int], Script] | None = None,
        units_at_once: int = 1,
        start_delay: float = 0.5,
        start_failures: list[str] | None = None,
        seed: int = 0,
        dt: float = 0.1,
    ):
        self.clock = clock
        self.scripts = scripts or {}
        self.units_at_once = units_at_once
        self.start_delay = start_delay
        self.start_failures = list(start_failures or [])
        self.rng = random.Random(seed)
        self.dt = dt
        self.workers: dict[int, _SimWorker] = {}
        self.ids = itertools.count(1)
        self.started_workers = 0
        self.cancelled: list[int] = []
        self.submissions: list[tuple[str, int, float]] = []  # (unit id, attempt, time)
        self.start_order: list[str] = []  # unit ids in the order attempts actually started

    def start_worker(self) -> int:
        wid = next(self.ids)
        self.started_workers += 1
        failure = self.start_failures.pop(0) if self.start_failures else None
        self.workers[wid] = _SimWorker(self.clock.now + self.start_delay, failure)
        return wid

    def submit(self, worker: int, unit: Unit, attempt: int) -> int:
        task = next(self.ids)
        self.workers[worker].queue.append((task, unit, attempt))
        self.submissions.append((unit.unit_id, attempt, self.clock.now))
        return task

    def cancel(self, worker: int) -> None:
        if self.workers.pop(worker, None) is not None:
            self.cancelled.append(worker)

    def wait(self, timeout_s: float) -> list[Event]:
        waited = 0.0
        while True:
            self.clock.now = round(self.clock.now + self.dt, 6)
            waited += self.dt
            events = self._step()
            if events or waited >= timeout_s - 1e-9:
                return events

    def _step(self) -> list[Event]:
        now, events = self.clock.now, []
        for wid, worker in list(self.workers.items()):
            if not worker.announced:
                if now >= worker.ready_at:
                    worker.announced = True
                    if worker.fails_to_start:
                        events.append(
                            WorkerStartFailed(
                                wid, "bad checkpoint", worker.fails_to_start == "transient"
                            )
                        )
                    else:
                        events.append(WorkerReady(wid))
                continue
            while worker.queue and len(worker.running) < self.units_at_once:
                pick = self.rng.randrange(len(worker.queue)) if self.units_at_once > 1 else 0
                task, unit, attempt = worker.queue.pop(pick)
                worker.running.append(_Running(task, unit, attempt, now))
                self.start_order.append(unit.unit_id)
            for run in list(worker.running):
                script = self.scripts.get((run.unit.unit_id, run.attempt), Script())
                elapsed = now - run.started
                if script.end == "stall":
                    elapsed = min(elapsed, script.stall_after)
                frames = min(script.frames, int(script.frames * elapsed / script.seconds))
                if frames != run.reported:
                    run.reported = frames
                    events.append(TaskProgress(run.task, frames))
                if script.end == "stall" or now - run.started < script.seconds - 1e-9:
                    continue
                worker.running.remove(run)
                if script.end == "die":
                    del self.workers[wid]
                    events.append(WorkerLost(wid, ConnectionError("worker process died")))
                    break
                if script.end == "raise":
                    events.append(TaskFailed(run.task, script.error))
                else:
                    events.append(TaskDone(run.task, _result(run, script)))
        return events


def _result(run: _Running, script: Script) -> UnitResult:
    unit = run.unit
    return UnitResult(
        unit_id=unit.unit_id,
        video=unit.job.video,
        video_identity="size=1",
        video_id=unit.video_id,
        object_ids=unit.object_ids,
        run_id="sim",
        model="sim",
        attempt=run.attempt,
        frames=script.frames,
        rows=script.frames,
        objects=len(unit.object_ids),
        path=f"masks/{unit.unit_id}.parquet",
    )
