"""A labeling run: manifest -> units -> Ray workers -> committed Parquet, with retries.

The coordinator reads and validates the manifest, plans units with
deterministic ids, claims their (video, object) pairs in the output
(:mod:`pipeline.claims`; another labeling's claim refuses the run before
anything is written), writes ``rejects/``, skips units already committed
(resume), and keeps a bounded number of units in flight on a pool of ``LabelWorker``
actors. It waits with ``ray.wait`` in completion order, asks
:mod:`pipeline.retry` whether a failed attempt runs again, enforces the
per-unit deadline by stopping the worker, replaces workers that died, and
writes ``failures/`` (earlier failures it did not settle are kept) and
``summary.json`` at the end, releasing the claims of units left unlabeled.

With ``videos_per_worker`` K > 1 each actor runs K units at once (a threaded
actor whose units share image-encoder batches); the first K calls queued on
an actor are the running ones. When such an actor dies, every unit it was
running counts a failed attempt (which one killed it cannot be told); when
one unit passes its deadline, only that unit does and the others it was
running go back to the queue unchanged.

Exit status: 0 every unit succeeded; 2 some unit failed for good or some
manifest entry was rejected; :class:`RunFatalError` (exit 1 in the CLI) when
the run itself cannot proceed.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.claims import ClaimRefused, claim_units, release_units
from pipeline.manifest import Reject, read_manifest
from pipeline.plan import Unit, conflicting_jobs, plan_units, why_other_labeling
from pipeline.progress import Progress
from pipeline.retry import RetryPolicy, UnitTimeoutError, classify, describe, root_cause
from pipeline.sink import OutputStore
from pipeline.storage import has_protocol
from pipeline.video import video_identities
from pipeline.worker import Fault, LabelWorker, WorkerConfig
from sam2_core import hub

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 2


class RunFatalError(RuntimeError):
    """The run cannot proceed at all (bad checkpoint, unreachable output or Ray, ...)."""


@dataclass(frozen=True)
class RunConfig:
    """One labeling run. ``faults`` is a test-only hook (see pipeline.worker.Fault)."""

    manifest: str
    output: str
    model: str
    checkpoint: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    ray_address: str | None = None
    local_num_cpus: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    strict: bool = False
    storage_options: dict | None = None
    run_id: str | None = None
    max_objects_per_unit: int | None = None
    torch_threads: int | None = None
    max_in_flight: int | None = None
    checkpoint_cache: str | None = None
    worker_start_timeout_s: float = 600.0
    progress: bool = True
    faults: tuple[Fault, ...] = ()
    videos_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.videos_per_worker < 1:
            raise ValueError(f"videos_per_worker must be >= 1, got {self.videos_per_worker}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError(
                f"per-worker resources must be >= 0, got cpus={self.cpus_per_worker} gpus={self.gpus_per_worker}"
            )
        if self.max_objects_per_unit is not None and self.max_objects_per_unit < 1:
            raise ValueError(f"max_objects_per_unit must be >= 1, got {self.max_objects_per_unit}")


@dataclass
class RunResult:
    exit_code: int
    summary: dict
    failures: list[dict]
    rejects: list[Reject]


def new_run_id() -> str:
    """A fresh, sortable run id: UTC time plus a few random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def describe_model(model: str, storage_options: dict | None = None) -> tuple[str, str]:
    """(label, identity) of a model argument: an official name is its own identity; a config
    file is named by its last two path parts and identified by its content hash."""
    looks_like_file = (
        has_protocol(model) or os.path.sep in model or model.endswith((".yaml", ".yml", ".json"))
    )
    if not looks_like_file:
        return model, model
    try:
        digest = hub.sha256_file(model, storage_options, what="model config")
    except FileNotFoundError as err:
        raise RunFatalError(f"model config not found: {model}") from err
    label = "/".join(model.rstrip("/").split("/")[-2:])
    return label, f"{label}:{digest[:16]}"


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
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
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


def run_labeling(config: RunConfig) -> RunResult:
    """Run a whole labeling job; see the module docstring for exit statuses."""
    started_wall, started = datetime.now(UTC), time.perf_counter()
    run_id = config.run_id or new_run_id()
    so = config.storage_options

    try:
        jobs, rejects = read_manifest(config.manifest, storage_options=so)
    except (OSError, ValueError) as err:
        raise RunFatalError(f"cannot read manifest {config.manifest}: {err}") from err
    jobs, clashes = conflicting_jobs(jobs)
    rejects = list(rejects) + clashes

    store = _open_output(config)

    label, model_id = describe_model(config.model, so)
    digest = None
    if config.checkpoint is not None:
        try:
            digest = hub.checkpoint_sha256(config.checkpoint, so)
        except OSError as err:
            raise RunFatalError(f"cannot read checkpoint {config.checkpoint}: {err}") from err
    model_name = f"{label}@{digest[:12] if digest else 'random-init'}"
    try:
        identities = video_identities([j.video for j in jobs], so)
    except OSError as err:
        raise RunFatalError(f"cannot plan the run: {err}") from err
    units = plan_units(jobs, model_id, digest, config.max_objects_per_unit, identities=identities)
    _claim(store, config, units, run_id, model_name)
    try:
        return _run_claimed(
            config, store, units, jobs, rejects, run_id, model_name, digest, started_wall, started
        )
    except RunFatalError:
        release_units(store, units)  # a later run may label these objects anew
        raise


def _run_claimed(
    config: RunConfig,
    store: OutputStore,
    units: list[Unit],
    jobs: list,
    rejects: list[Reject],
    run_id: str,
    model_name: str,
    digest: str | None,
    started_wall: datetime,
    started: float,
) -> RunResult:
    """The run once its units' objects are claimed: nothing is written before this point."""
    so = config.storage_options
    committed = store.committed_units()
    clash = _other_labeling(store, units, committed)
    if clash is not None:
        raise RunFatalError(
            f"output {config.output} already holds masks of video {clash.get('video_id')!r} "
            f"objects {clash.get('object_ids')} from another labeling (unit {clash.get('unit_id')}): "
            f"{why_other_labeling(clash, units, model_name)}. Both would give two masks per "
            "object and frame: label into a new --output, or remove the old one first."
        )
    todo = [u for u in units if u.unit_id not in committed]
    try:
        store.remove_uncommitted_data()
        store.write_rejects(rejects, config.manifest)
    except Exception as err:
        raise RunFatalError(
            f"output {config.output} is not reachable or writable: {type(err).__name__}: {err}"
        ) from err

    summary = {
        "run_id": run_id,
        "manifest": config.manifest,
        "output": config.output,
        "model": model_name,
        "checkpoint": config.checkpoint,
        "checkpoint_sha256": digest,
        "videos": len({j.video_id for j in jobs}),
        "units": len(units),
        "units_done": 0,
        "skipped": len(units) - len(todo),
        "failed": 0,
        "rejected": len(rejects),
        "retries": 0,
        "frames": 0,
        "rows": 0,
        "workers": config.workers,
        "started_at": started_wall.isoformat(),
    }
    failures: list[dict] = []

    if config.strict and rejects:
        summary["status"] = "rejected"
        summary["note"] = "--strict: the manifest has rejects, nothing was labeled"
        release_units(store, units)
        _finish(store, units, summary, failures, started)
        return RunResult(EXIT_PARTIAL, summary, failures, rejects)

    if todo:
        worker_config = WorkerConfig(
            model=config.model,
            checkpoint=config.checkpoint,
            checkpoint_digest=digest,
            output=config.output,
            run_id=run_id,
            model_name=model_name,
            storage_options=so,
            device="cuda" if config.gpus_per_worker > 0 else "cpu",
            torch_threads=config.torch_threads or max(1, math.ceil(config.cpus_per_worker)),
            cache_dir=config.checkpoint_cache,
            faults=tuple(config.faults),
            videos_at_once=config.videos_per_worker,
        )
        started_ray = connect_ray(config.ray_address, config.local_num_cpus)
        progress = Progress(len(todo), enabled=config.progress, skipped=summary["skipped"])
        try:
            scheduler = _Scheduler(config, worker_config, todo, progress)
            try:
                results, failures = scheduler.run()
            except RunFatalError as err:
                summary["status"] = "fatal"
                summary["error"] = str(err)
                summary["units_done"] = len(scheduler.results)
                _finish(store, units, summary, scheduler.failures, started, best_effort=True)
                raise
            except KeyboardInterrupt:  # Ctrl-C: record how far the run got, then stop
                summary.update(status="interrupted", interrupted=True, units_done=len(scheduler.results))
                summary["frames"] = sum(r["frames"] for r in scheduler.results)
                summary["rows"] = sum(r["rows"] for r in scheduler.results)
                _finish(store, summary, scheduler.failures, started, best_effort=True)
                raise
            summary["units_done"] = len(results)
            summary["frames"] = sum(r["frames"] for r in results)
            summary["rows"] = sum(r["rows"] for r in results)
            summary["retries"] = scheduler.retries
            # Seconds summed over units: track includes decode (overlapped on a prefetch
            # thread) and encode (masks to RLE); the rest of track is the model.
            summary["unit_seconds"] = {
                key: round(sum(r.get(f"{key}_s", 0.0) for r in results), 3)
                for key in ("total", "track", "decode", "encode", "commit")
            }
            if config.videos_per_worker > 1:
                summary["frames_per_encoder_batch"] = _frames_per_batch(results)
        finally:
            progress.close()
            if started_ray:
                import ray

                ray.shutdown()

    summary["failed"] = len(failures)
    summary["status"] = "ok" if not failures and not rejects else "partial"
    release_units(store, units)  # the claims of units that failed for good
    _finish(store, units, summary, failures, started)
    code = EXIT_OK if not failures and not rejects else EXIT_PARTIAL
    return RunResult(code, summary, failures, rejects)


def _other_labeling(store: OutputStore, units: list[Unit], committed: set[str]) -> dict | None:
    """The commit metadata of a unit already in the output that labels one of these units'
    (video, object) pairs under another unit id, if any: resuming is safe only when every
    committed unit touching this run's objects is one this run would write itself."""
    planned = {u.unit_id for u in units}
    wanted = {(u.video_id, oid) for u in units for oid in u.object_ids}
    for unit_id in sorted(committed - planned):
        meta = store.read_commit(unit_id).get("metadata", {})
        if any((meta.get("video_id"), oid) in wanted for oid in meta.get("object_ids", ())):
            return {"unit_id": unit_id, **meta}
    return None


def _open_output(config: RunConfig) -> OutputStore:
    """The output store, refused when Ray workers cannot reach it or it cannot be listed."""
    try:
        store = OutputStore(config.output, storage_options=config.storage_options)
        store.committed_units()
    except Exception as err:
        raise RunFatalError(
            f"output {config.output} is not reachable or writable: {type(err).__name__}: {err}"
        ) from err
    protocols = (store.fs.protocol,) if isinstance(store.fs.protocol, str) else store.fs.protocol
    if "memory" in protocols:
        raise RunFatalError(
            f"output {config.output} is in this process's memory, which Ray workers (separate "
            "processes) cannot reach: the masks would be lost. Use a local folder or object store."
        )
    return store


def _claim(store: OutputStore, config: RunConfig, units: list[Unit], run_id: str, model: str) -> None:
    """Claim the units' (video, object) keys (pipeline.claims); a clash or a store error is fatal."""
    try:
        claim_units(store, units, run_id, model)
    except ClaimRefused as err:
        holder = err.holder
        if store.is_committed(holder.unit_id):  # labeled already: say what differs
            meta = store.read_commit(holder.unit_id).get("metadata", {})
            raise RunFatalError(
                f"output {config.output} already holds masks of video {holder.video_id!r} "
                f"object {holder.object_id} from another labeling (unit {holder.unit_id}): "
                f"{why_other_labeling({'unit_id': holder.unit_id, **meta}, units, model)}. Both "
                "would give two masks per object and frame: label into a new --output, or "
                "remove the old one first."
            ) from err
        raise RunFatalError(
            f"output {config.output}: video {holder.video_id!r} object {holder.object_id} is "
            f"claimed by another labeling (unit {holder.unit_id}, run {holder.run_id}, model "
            f"{holder.model}; this run: model {model}, unit {err.wanted.unit_id}); a different "
            "model, checkpoint or prompts would give two masks per object and frame. Label "
            f"into a new --output, or, if that labeling is no longer running and its objects "
            f"should be labeled anew, delete its claim {err.path}."
        ) from err
    except Exception as err:
        raise RunFatalError(
            f"output {config.output} is not reachable or writable: {type(err).__name__}: {err}"
        ) from err


def _finish(
    store: OutputStore,
    units: list[Unit],
    summary: dict,
    failures: list[dict],
    started: float,
    best_effort: bool = False,
) -> None:
    wall = time.perf_counter() - started
    summary["wall_time_s"] = round(wall, 3)
    summary["frames_per_s"] = round(summary["frames"] / wall, 3) if wall > 0 else 0.0
    summary["finished_at"] = datetime.now(UTC).isoformat()
    try:
        store.write_failures(_outstanding_failures(store, units, failures))
        store.write_summary(summary)
    except Exception as err:
        if not best_effort:
            raise RunFatalError(
                f"could not write the run's results to {summary['output']}: {err}"
            ) from err


def _outstanding_failures(store: OutputStore, units: list[Unit], failures: list[dict]) -> list[dict]:
    """This run's failures plus the earlier ones it did not settle: an earlier row goes only
    when its unit is committed now or when this run committed or failed a unit labeling one
    of its (video, object) pairs. A run that stops early or labels other videos loses none."""
    committed = store.committed_units()
    settled_units = {u.unit_id for u in units if u.unit_id in committed}
    settled_units |= {f["unit_id"] for f in failures}
    settled = {(u.video_id, o) for u in units if u.unit_id in settled_units for o in u.object_ids}
    kept = []
    for row in store.read_failures():
        if row.get("unit_id") in committed or row.get("unit_id") in settled_units:
            continue
        object_ids = row.get("object_ids")
        if isinstance(object_ids, str):
            object_ids = json.loads(object_ids)
        if any((row.get("video_id"), o) in settled for o in object_ids or ()):
            continue
        kept.append(row)
    return kept + failures


@dataclass
class _Slot:
    """One worker actor and the unit attempts queued on it; the first ``concurrency`` of the
    queue are running, each since the time in ``started``."""

    handle: object
    concurrency: int = 1
    queue: deque = field(default_factory=deque)
    started: dict = field(default_factory=dict)

    def running(self) -> list:
        return list(self.queue)[: self.concurrency]

    def mark_started(self, now: float) -> None:
        for ref in self.running():
            self.started.setdefault(ref, now)


@dataclass
class _Attempt:
    unit: Unit
    attempt: int
    slot: _Slot


class _Scheduler:
    """Bounded in-flight units on a replaceable actor pool, in completion order."""

    def __init__(
        self, config: RunConfig, worker_config: WorkerConfig, units: list[Unit], progress: Progress
    ):
        import ray

        self.ray = ray
        self.config = config
        self.policy = config.retry
        self.worker_config = worker_config
        self.progress = progress
        self.total = len(units)
        seq = itertools.count()
        self._seq = seq
        # (not before, sequence, unit, attempt): due units in plan order, retries after their backoff.
        self.pending: list[tuple[float, int, Unit, int]] = [(0.0, next(seq), u, 1) for u in units]
        self.slots: list[_Slot] = []
        self.starting: dict = {}  # ready() ref -> (handle, since)
        self.tasks: dict = {}  # run() ref -> _Attempt
        self.results: list[dict] = []
        self.failures: list[dict] = []
        self.retries = 0
        self.starts = 0
        self.max_starts = 2 * config.workers + self.total * self.policy.max_attempts
        depth = config.max_in_flight or 2 * config.workers
        self.concurrency = config.videos_per_worker
        self.depth = max(1, math.ceil(depth / config.workers)) + self.concurrency - 1
        options = {
            "num_cpus": config.cpus_per_worker,
            "max_restarts": 0,
            "max_task_retries": 0,
            "scheduling_strategy": "SPREAD",
        }
        if self.concurrency > 1:
            options["max_concurrency"] = self.concurrency
        if config.gpus_per_worker > 0:
            options["num_gpus"] = config.gpus_per_worker
        self.actor_class = ray.remote(LabelWorker).options(**options)

    # -- actors -----------------------------------------------------------------------------
    def _check_resources(self) -> None:
        total = self.ray.cluster_resources()
        need_gpu, need_cpu = self.config.gpus_per_worker, self.config.cpus_per_worker
        if need_gpu > 0 and total.get("GPU", 0) < need_gpu:
            raise RunFatalError(
                f"each worker needs {need_gpu} GPU(s) but the Ray cluster has {total.get('GPU', 0)}; "
                "check `ray status` or lower --gpus-per-worker"
            )
        if total.get("CPU", 0) < need_cpu:
            raise RunFatalError(
                f"each worker needs {need_cpu} CPU(s) but the Ray cluster has {total.get('CPU', 0)}; "
                "check `ray status`"
            )

    def _start_worker(self) -> None:
        if self.starts >= self.max_starts:
            raise RunFatalError(
                f"started {self.starts} workers and they keep dying; giving up (check `ray status` and the worker logs)"
            )
        self.starts += 1
        handle = self.actor_class.remote(self.worker_config)
        self.starting[handle.ready.remote()] = (handle, time.monotonic())

    def _on_ready(self, ref) -> None:
        handle, _ = self.starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except Exception as err:  # the actor died while loading (node lost...)
            self.progress.note(
                f"a worker died while starting ({type(err).__name__}); starting another"
            )
            self._kill(handle)
            self._start_worker()
            return
        if "error" in info:
            self._kill(handle)
            message = f"worker could not load the model: {info['error_type']}: {info['error']}"
            if not info.get("transient"):
                raise RunFatalError(message)
            self.progress.note(message + "; starting another")
            self._start_worker()
            return
        self.slots.append(_Slot(handle, self.concurrency))

    def _kill(self, handle) -> None:
        try:
            self.ray.kill(handle, no_restart=True)
        except Exception:
            pass

    def _retire(self, slot: _Slot, error: BaseException, culprit=None) -> None:
        """The slot's actor is gone or was stopped. The attempts it was running failed with
        `error` (only `culprit`'s, when one is named: the others go back to pending, as do
        attempts queued behind them, unchanged); a new worker starts if work remains."""
        if slot in self.slots:
            self.slots.remove(slot)
        self._kill(slot.handle)
        running = slot.running()
        for ref in list(slot.queue):
            attempt = self.tasks.pop(ref, None)
            if attempt is None:
                continue
            if ref in running and (culprit is None or ref == culprit):
                self._failed(attempt, error)
            else:
                heapq.heappush(self.pending, (0.0, next(self._seq), attempt.unit, attempt.attempt))
        slot.queue.clear()
        slot.started.clear()
        if self.pending or self.tasks:
            self._start_worker()

    # -- units ------------------------------------------------------------------------------
    def _submit(self) -> None:
        now = time.monotonic()
        # While workers are still starting, the ready ones take only what they run at once, so
        # that early workers do not queue up units that a worker about to start could run.
        depth = self.concurrency if self.starting else self.depth
        while self.pending and self.pending[0][0] <= now:
            free = [s for s in self.slots if len(s.queue) < depth]
            if not free:
                return
            slot = min(free, key=lambda s: len(s.queue))
            _, _, unit, attempt = heapq.heappop(self.pending)
            ref = slot.handle.run.remote(unit, attempt)
            slot.queue.append(ref)
            slot.mark_started(now)
            self.tasks[ref] = _Attempt(unit, attempt, slot)

    def _failed(self, attempt: _Attempt, error: BaseException) -> None:
        if self.policy.should_retry(error, attempt.attempt):
            self.retries += 1
            self.progress.retried()
            etype, message = describe(error)
            self.progress.note(
                f"unit {attempt.unit.unit_id} attempt {attempt.attempt} failed ({etype}: {message[:200]}); retrying"
            )
            when = time.monotonic() + self.policy.backoff(attempt.attempt)
            heapq.heappush(self.pending, (when, next(self._seq), attempt.unit, attempt.attempt + 1))
            return
        etype, message = describe(error)
        self.failures.append(
            {
                "unit_id": attempt.unit.unit_id,
                "video": attempt.unit.job.video,
                "video_id": attempt.unit.video_id,
                "object_ids": list(attempt.unit.object_ids),
                "location": attempt.unit.job.location,
                "attempts": attempt.attempt,
                "error_type": etype,
                "transient": classify(error) == "transient",
                "reason": message,
            }
        )
        self.progress.unit_failed()

    def _on_result(self, ref) -> None:
        attempt = self.tasks.get(ref)
        if attempt is None:  # belonged to a retired worker; already accounted for
            return
        slot = attempt.slot
        try:
            metadata = self.ray.get(ref)
        except Exception as err:
            if not _is_task_error(err) or isinstance(
                root_cause(err), self.ray.exceptions.RayActorError
            ):
                self._retire(slot, err)  # the worker is gone, not just this unit
                return
            self._done(ref, slot)
            self._failed(attempt, err)
            return
        self._done(ref, slot)
        self.results.append(metadata)
        self.progress.unit_done(metadata)

    def _done(self, ref, slot: _Slot) -> None:
        self.tasks.pop(ref, None)
        if ref in slot.queue:
            slot.queue.remove(ref)
        slot.started.pop(ref, None)
        slot.mark_started(time.monotonic())

    def _check_deadlines(self) -> None:
        limit = self.policy.unit_timeout_s
        if limit is None:
            return
        now = time.monotonic()
        for slot in list(self.slots):
            late = [ref for ref in slot.running() if now - slot.started[ref] > limit]
            if late:
                unit = self.tasks[late[0]].unit
                self._retire(
                    slot,
                    UnitTimeoutError(f"unit {unit.unit_id} ran past its {limit:g} s deadline"),
                    culprit=late[0],
                )

    def _check_starting(self) -> None:
        if self.slots or not self.starting:
            return
        oldest = min(since for _, since in self.starting.values())
        if time.monotonic() - oldest > self.config.worker_start_timeout_s:
            raise RunFatalError(
                f"no worker could start within {self.config.worker_start_timeout_s:g} s "
                f"(each needs {self.config.cpus_per_worker} CPU, {self.config.gpus_per_worker} GPU); "
                "check `ray status`"
            )

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> tuple[list[dict], list[dict]]:
        self._check_resources()
        try:
            for _ in range(min(self.config.workers, self.total)):
                self._start_worker()
            while self.pending or self.tasks:
                self._submit()
                waiting = list(self.tasks) + list(self.starting)
                timeout = 1.0
                if self.pending and not self.tasks:
                    timeout = min(timeout, max(0.01, self.pending[0][0] - time.monotonic()))
                if waiting:
                    done, _ = self.ray.wait(waiting, num_returns=1, timeout=timeout)
                else:
                    time.sleep(timeout)
                    done = []
                for ref in done:
                    if ref in self.starting:
                        self._on_ready(ref)
                    else:
                        self._on_result(ref)
                self._check_deadlines()
                self._check_starting()
                if not self.slots and not self.starting and (self.pending or self.tasks):
                    self._start_worker()
        finally:
            for slot in self.slots:
                self._kill(slot.handle)
            for handle, _ in self.starting.values():
                self._kill(handle)
        return self.results, self.failures


def _frames_per_batch(results: list[dict]) -> float | None:
    """Mean frames per image-encoder call over the workers (each result carries its actor's
    running totals, so the latest per actor counts)."""
    latest: dict = {}
    for r in results:
        if "encoder_batches" in r:
            key = (r.get("node_id"), r.get("pid"))
            latest[key] = max(latest.get(key, (0, 0)), (r["encoder_batches"], r["encoder_images"]))
    batches = sum(b for b, _ in latest.values())
    return round(sum(i for _, i in latest.values()) / batches, 3) if batches else None


def _is_task_error(err: BaseException) -> bool:
    """True when the worker's own code raised (RayTaskError), as opposed to Ray losing it."""
    from ray.exceptions import RayTaskError

    return isinstance(err, RayTaskError)
