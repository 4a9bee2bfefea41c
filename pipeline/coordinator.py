"""A labeling run: manifest -> units -> Ray workers -> committed Parquet, with retries.

The coordinator reads and validates the manifest, plans units with deterministic ids,
claims their (video, object) pairs in the output (:mod:`pipeline.claims`; another labeling's
claim refuses the run before anything is written), writes ``rejects/``, skips units already
committed (resume), and hands the rest to :class:`pipeline.scheduler.Scheduler` on Ray
(:mod:`pipeline.ray_backend`): bounded in-flight units, completion order, stall timeouts,
retries by :mod:`pipeline.retry`. At the end it writes ``failures/`` (earlier failures it did
not settle are kept) and ``summary.json``, releasing the claims of units left unlabeled.

Exit status: 0 every unit succeeded; 2 some unit failed for good or some manifest entry was
rejected; :class:`RunFatalError` (exit 1 in the CLI) when the run itself cannot proceed;
KeyboardInterrupt passes through once the summary of what was done is written.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.claims import ClaimRefused, claim_units, release_units
from pipeline.detectors import DetectorSpec
from pipeline.device import ComputeOptions
from pipeline.errors import RunFatalError
from pipeline.manifest import Reject, read_manifest
from pipeline.plan import (
    Unit,
    conflicting_jobs,
    detector_category_rejects,
    plan_units,
    why_other_labeling,
)
from pipeline.progress import Progress
from pipeline.ray_backend import ActorResources, RayBackend, connect_ray
from pipeline.records import ChunkSummary, RunSummary, UnitFailure, UnitResult, UnitSeconds
from pipeline.retry import RetryPolicy
from pipeline.scheduler import Limits, Scheduler, default_queue_depth
from pipeline.sink import OutputStore
from pipeline.storage import has_protocol
from pipeline.video_identity import video_identities
from pipeline.worker import LabelWorker, WorkerConfig
from sam2_core import hub

EXIT_OK, EXIT_PARTIAL = 0, 2

__all__ = ["EXIT_OK", "EXIT_PARTIAL", "RunConfig", "RunFatalError", "RunResult", "run_labeling"]


@dataclass(frozen=True)
class RunConfig:
    """One labeling run."""

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
    images_per_unit: int | None = None  # None: pipeline.plan.DEFAULT_IMAGES_PER_UNIT
    discover_every: int | None = None  # None: sam2_core.discovery.DEFAULT_DISCOVER_EVERY
    detector: DetectorSpec | None = None  # boxes that start objects in videos without objects
    torch_threads: int | None = None
    max_in_flight: int | None = None
    checkpoint_cache: str | None = None
    worker_start_timeout_s: float = 600.0
    progress: bool = True
    videos_per_worker: int = 1
    compute: ComputeOptions = field(default_factory=ComputeOptions)

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
    summary: RunSummary
    failures: list[UnitFailure]
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


def run_labeling(config: RunConfig, worker_class: type = LabelWorker) -> RunResult:
    """Run a whole labeling job; see the module docstring for exit statuses. `worker_class`
    is the actor class (tests pass a ``LabelWorker`` subclass that injects faults)."""
    started_wall, started = datetime.now(UTC), time.perf_counter()
    run_id = config.run_id or new_run_id()
    so = config.storage_options

    try:
        jobs, rejects = read_manifest(config.manifest, storage_options=so)
    except (OSError, ValueError) as err:
        raise RunFatalError(f"cannot read manifest {config.manifest}: {err}") from err
    jobs, clashes = conflicting_jobs(jobs)
    jobs, undetected = detector_category_rejects(jobs, config.detector)
    rejects = list(rejects) + clashes + undetected

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
    units = plan_units(
        jobs,
        model_id,
        digest,
        config.max_objects_per_unit,
        identities=identities,
        images_per_unit=config.images_per_unit,
        discover_every=config.discover_every,
        detector=config.detector,
    )
    _claim(store, config, units, run_id, model_name)
    summary = RunSummary(
        run_id=run_id,
        manifest=config.manifest,
        output=config.output,
        model=model_name,
        checkpoint=config.checkpoint,
        checkpoint_sha256=digest,
        started_at=started_wall.isoformat(),
        videos=len({j.video_id for j in jobs}),
        units=len(units),
        rejected=len(rejects),
        workers=config.workers,
    )
    try:
        return _run_claimed(config, store, units, rejects, summary, worker_class, started)
    except RunFatalError:
        release_units(store, units)  # a later run may label these objects anew
        raise


def _run_claimed(
    config: RunConfig,
    store: OutputStore,
    units: list[Unit],
    rejects: list[Reject],
    summary: RunSummary,
    worker_class: type,
    started: float,
) -> RunResult:
    """The run once its units' objects are claimed: nothing is written before this point."""
    committed = store.committed_units()
    clash = _other_labeling(store, units, committed)
    if clash is not None:
        raise RunFatalError(
            f"output {config.output} already holds masks of video {clash.get('video_id')!r} "
            f"objects {clash.get('object_ids')} from another labeling (unit {clash.get('unit_id')}): "
            f"{why_other_labeling(clash, units, summary.model)}. Both would give two masks per "
            "object and frame: label into a new --output, or remove the old one first."
        )
    todo = [u for u in units if u.unit_id not in committed]
    summary.skipped = len(units) - len(todo)
    try:
        store.remove_uncommitted_data()
        store.write_rejects(rejects, config.manifest)
    except Exception as err:
        raise RunFatalError(
            f"output {config.output} is not reachable or writable: {type(err).__name__}: {err}"
        ) from err

    if config.strict and rejects:
        summary.status = "rejected"
        summary.note = "--strict: the manifest has rejects, nothing was labeled"
        release_units(store, units)
        _finish(store, units, summary, [], [], started)
        return RunResult(EXIT_PARTIAL, summary, [], rejects)

    results: list[UnitResult] = []
    failures: list[UnitFailure] = []
    retries = 0
    if todo:
        scheduler = None
        started_ray = connect_ray(config.ray_address, config.local_num_cpus)
        progress = Progress(len(todo), enabled=config.progress, skipped=summary.skipped)
        try:
            scheduler = _scheduler(config, summary, todo, worker_class, progress)
            outcome = scheduler.run()
            results, failures, retries = outcome.results, outcome.failures, outcome.retries
        except (RunFatalError, KeyboardInterrupt) as err:
            fatal = isinstance(err, RunFatalError)
            summary.status = "fatal" if fatal else "interrupted"
            summary.interrupted = not fatal
            summary.error = str(err) if fatal else None
            done = scheduler.results if scheduler is not None else []
            failed = scheduler.failures if scheduler is not None else []
            _tally(summary, done, failed, scheduler.retries if scheduler is not None else 0)
            if not fatal:
                release_units(store, units)
            _finish(store, units, summary, done, failed, started, best_effort=True)
            raise
        finally:
            progress.close()
            if started_ray:
                import ray

                ray.shutdown()

    _tally(summary, results, failures, retries)
    summary.status = "ok" if not failures and not rejects else "partial"
    release_units(store, units)  # the claims of units that failed for good
    _finish(store, units, summary, results, failures, started)
    code = EXIT_OK if not failures and not rejects else EXIT_PARTIAL
    return RunResult(code, summary, failures, rejects)


def _scheduler(
    config: RunConfig,
    summary: RunSummary,
    units: list[Unit],
    worker_class: type,
    progress: Progress,
) -> Scheduler:
    """The scheduler of this run's units on Ray actors of `worker_class`."""
    worker_config = WorkerConfig(
        model=config.model,
        checkpoint=config.checkpoint,
        checkpoint_digest=summary.checkpoint_sha256,
        output=config.output,
        run_id=summary.run_id,
        model_name=summary.model,
        storage_options=config.storage_options,
        device="cuda" if config.gpus_per_worker > 0 else "cpu",
        torch_threads=config.torch_threads or max(1, math.ceil(config.cpus_per_worker)),
        cache_dir=config.checkpoint_cache,
        videos_at_once=config.videos_per_worker,
        gpus=config.gpus_per_worker,
        compute=config.compute,
        detector=config.detector,
    )
    resources = ActorResources(
        cpus=config.cpus_per_worker,
        gpus=config.gpus_per_worker,
        units_at_once=config.videos_per_worker,
    )
    backend = RayBackend(worker_config, resources, worker_class=worker_class)
    backend.check_resources(resources)
    limits = Limits(
        workers=config.workers,
        units_at_once=config.videos_per_worker,
        queue_depth=default_queue_depth(
            config.workers, config.videos_per_worker, config.max_in_flight
        ),
        worker_start_timeout_s=config.worker_start_timeout_s,
    )
    return Scheduler(backend, units, config.retry, limits, observer=progress)


def _tally(
    summary: RunSummary, results: list[UnitResult], failures: list[UnitFailure], retries: int
) -> None:
    """Counts and per-stage seconds of what the run did."""
    summary.units_done = len(results)
    summary.failed = len(failures)
    summary.retries = retries
    summary.frames = sum(r.frames for r in results)
    summary.rows = sum(r.rows for r in results)
    summary.unit_seconds = UnitSeconds.of(results)
    summary.frames_per_encoder_batch = _frames_per_batch(results)
    summary.worker_settings = list(dict.fromkeys(r.settings for r in results if r.settings))
    summary.object_chunks = ChunkSummary.of(results)


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


def _claim(
    store: OutputStore, config: RunConfig, units: list[Unit], run_id: str, model: str
) -> None:
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
    summary: RunSummary,
    results: list[UnitResult],
    failures: list[UnitFailure],
    started: float,
    best_effort: bool = False,
) -> None:
    wall = time.perf_counter() - started
    summary.wall_time_s = round(wall, 3)
    summary.frames_per_s = round(summary.frames / wall, 3) if wall > 0 else 0.0
    summary.finished_at = datetime.now(UTC).isoformat()
    try:
        store.write_failures(_outstanding_failures(store, units, failures))
        store.write_summary(summary)
    except Exception as err:
        if not best_effort:
            raise RunFatalError(
                f"could not write the run's results to {summary.output}: {err}"
            ) from err


def _outstanding_failures(
    store: OutputStore, units: list[Unit], failures: list[UnitFailure]
) -> list[UnitFailure]:
    """This run's failures plus the earlier ones it did not settle: an earlier row goes only
    when its unit is committed now or when this run committed or failed a unit labeling one
    of its (video, object) pairs. A run that stops early or labels other videos loses none."""
    committed = store.committed_units()
    settled_units = {u.unit_id for u in units if u.unit_id in committed}
    settled_units |= {f.unit_id for f in failures}
    settled = {(u.video_id, o) for u in units if u.unit_id in settled_units for o in u.object_ids}
    kept = [
        earlier
        for earlier in store.read_failures()
        if earlier.unit_id not in committed | settled_units
        and not any((earlier.video_id, o) in settled for o in earlier.object_ids)
    ]
    return kept + failures


def _frames_per_batch(results: list[UnitResult]) -> float | None:
    """Mean frames per image-encoder call over the workers (each result carries its actor's
    running totals, so the latest per actor counts); None without a shared encoder."""
    latest: dict = {}
    for r in results:
        if r.encoder_batches:
            key = (r.node_id, r.pid)
            latest[key] = max(latest.get(key, (0, 0)), (r.encoder_batches, r.encoder_images))
    batches = sum(b for b, _ in latest.values())
    return round(sum(i for _, i in latest.values()) / batches, 3) if batches else None
