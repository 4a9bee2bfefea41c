"""The scheduler's backend on Ray: one ``LabelWorker`` actor per worker.

Each actor runs unit attempts through ``run`` (``units_at_once`` of them at once on threads
when more than one) and answers ``status`` in a concurrency group of its own, so the
coordinator learns when an attempt really started and how many frames it has tracked even
while every run thread is busy. Results come back in completion order through ``ray.wait``;
nothing but small records crosses Ray's object store.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from pipeline.errors import RunFatalError
from pipeline.plan import Unit
from pipeline.retry import root_cause
from pipeline.scheduler import (
    Event,
    TaskDone,
    TaskFailed,
    TaskProgress,
    WorkerLost,
    WorkerReady,
    WorkerStartFailed,
)
from pipeline.worker import LabelWorker, WorkerConfig

STATUS_GROUP = "status"


@dataclass(frozen=True)
class ActorResources:
    """What one worker actor asks Ray for."""

    cpus: float = 1.0
    gpus: float = 0.0
    units_at_once: int = 1


@dataclass
class _Actor:
    handle: object
    ready: bool = False
    tasks: dict = field(default_factory=dict)  # token -> run() ref
    status_ref: object = None
    status_due: float = 0.0


class RayBackend:
    """Starts, feeds and stops ``worker_class`` actors (``LabelWorker`` or a test's subclass)."""

    def __init__(
        self,
        worker_config: WorkerConfig,
        resources: ActorResources,
        worker_class: type = LabelWorker,
        status_interval_s: float = 1.0,
    ):
        import ray

        self.ray = ray
        self.worker_config = worker_config
        self.status_interval_s = status_interval_s
        options: dict = {
            "num_cpus": resources.cpus,
            "max_restarts": 0,
            "max_task_retries": 0,
            "scheduling_strategy": "SPREAD",
        }
        if resources.units_at_once > 1:
            options["max_concurrency"] = resources.units_at_once
        if resources.gpus > 0:
            options["num_gpus"] = resources.gpus
        remote = ray.remote(concurrency_groups={STATUS_GROUP: 1})(worker_class)
        self.actor_class = remote.options(**options)
        self.actors: dict[int, _Actor] = {}
        self.starting: dict = {}  # ready() ref -> worker id
        self.running: dict = {}  # run() ref -> (worker id, token)
        self.statuses: dict = {}  # status() ref -> worker id
        self._ids = itertools.count(1)

    def check_resources(self, resources: ActorResources) -> None:
        """Refuse at once when the cluster could never place one worker."""
        total = self.ray.cluster_resources()
        if resources.gpus > 0 and total.get("GPU", 0) < resources.gpus:
            raise RunFatalError(
                f"each worker needs {resources.gpus} GPU(s) but the Ray cluster has "
                f"{total.get('GPU', 0)}; check `ray status` or lower --gpus-per-worker"
            )
        if total.get("CPU", 0) < resources.cpus:
            raise RunFatalError(
                f"each worker needs {resources.cpus} CPU(s) but the Ray cluster has "
                f"{total.get('CPU', 0)}; check `ray status`"
            )

    # -- Backend protocol -------------------------------------------------------------------
    def start_worker(self) -> Hashable:
        worker = next(self._ids)
        handle = self.actor_class.remote(self.worker_config)
        self.actors[worker] = _Actor(handle)
        self.starting[handle.ready.remote()] = worker
        return worker

    def submit(self, worker: Hashable, unit: Unit, attempt: int) -> Hashable:
        actor = self.actors[worker]
        token = f"{unit.unit_id}#{attempt}"
        ref = actor.handle.run.remote(unit, attempt, token)
        actor.tasks[token] = ref
        self.running[ref] = (worker, token)
        return ref

    def cancel(self, worker: Hashable) -> None:
        actor = self.actors.pop(worker, None)
        if actor is None:
            return
        for ref in actor.tasks.values():
            self.running.pop(ref, None)
        for refs in (self.starting, self.statuses):
            for ref in [r for r, w in refs.items() if w == worker]:
                del refs[ref]
        try:
            self.ray.kill(actor.handle, no_restart=True)
        except Exception:
            pass

    def wait(self, timeout_s: float) -> list[Event]:
        self._poll_statuses()
        refs = list(self.running) + list(self.starting) + list(self.statuses)
        if not refs:
            time.sleep(timeout_s)
            return []
        done, _ = self.ray.wait(refs, num_returns=1, timeout=timeout_s)
        if done:  # take whatever else is already finished too
            more, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            done = list(dict.fromkeys(done + more))
        events: list[Event] = []
        for ref in done:
            if ref in self.starting:
                events.append(self._on_ready(ref))
            elif ref in self.statuses:
                events.extend(self._on_status(ref))
            elif ref in self.running:
                events.extend(self._on_result(ref))
        return events

    # -- events -----------------------------------------------------------------------------
    def _poll_statuses(self) -> None:
        now = time.monotonic()
        for worker, actor in self.actors.items():
            if actor.ready and actor.tasks and actor.status_ref is None and now >= actor.status_due:
                ref = actor.handle.status.options(concurrency_group=STATUS_GROUP).remote()
                actor.status_ref = ref
                self.statuses[ref] = worker

    def _on_ready(self, ref) -> Event:
        worker = self.starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except Exception as err:  # the actor died while loading (node lost, ...)
            return WorkerStartFailed(worker, f"{type(err).__name__} while starting", True)
        if info.error is not None:
            return WorkerStartFailed(worker, info.error, info.transient)
        self.actors[worker].ready = True
        return WorkerReady(worker)

    def _on_status(self, ref) -> list[Event]:
        worker = self.statuses.pop(ref)
        actor = self.actors.get(worker)
        if actor is None:
            return []
        actor.status_ref = None
        actor.status_due = time.monotonic() + self.status_interval_s
        try:
            frames_by_token = self.ray.get(ref)
        except Exception:  # a dead actor shows on its run() calls
            return []
        return [
            TaskProgress(actor.tasks[token], frames)
            for token, frames in frames_by_token.items()
            if token in actor.tasks
        ]

    def _on_result(self, ref) -> list[Event]:
        worker, token = self.running.pop(ref)
        actor = self.actors.get(worker)
        if actor is not None:
            actor.tasks.pop(token, None)
        try:
            result = self.ray.get(ref)
        except Exception as err:
            if _worker_is_gone(err):
                return [WorkerLost(worker, err)]
            return [TaskFailed(ref, err)]
        return [TaskDone(ref, result)]


def _worker_is_gone(err: BaseException) -> bool:
    """True when Ray lost the actor (process or node), false when the unit's own code raised."""
    from ray.exceptions import RayActorError, RayTaskError

    return not isinstance(err, RayTaskError) or isinstance(root_cause(err), RayActorError)


def connect_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to Ray (``address``) or start a local instance; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            _probe(address)
            ray.init(address=address, log_to_driver=True)
        elif os.environ.get("RAY_ADDRESS"):  # inside a Ray job: join its cluster
            ray.init(log_to_driver=True)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # address="local": always a fresh instance, never a cluster someone else
            # started on this machine with `ray start`.
            ray.init(
                address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True
            )
    except Exception as err:
        where = address or "a local Ray instance"
        raise RunFatalError(
            f"could not start or reach Ray at {where}: {type(err).__name__}: {err} "
            "(check the address and run `ray status` on the cluster)"
        ) from err
    return True


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when a ``host:port`` Ray address does not answer: ``ray.init`` would
    otherwise keep retrying for minutes."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address == "auto":
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port} ({err})") from err
