"""The Ray worker: one model per actor process, one unit attempt per ``run`` call.

``LabelWorker`` is a plain class; ``pipeline.ray_backend`` wraps it with ``ray.remote`` and
the CPU/GPU share each worker needs. ``__init__`` reads the checkpoint through
``sam2_core.hub`` (cached per node under its digest; the SHA-256 of the bytes it loads must be
the digest the run was planned with, else ``CheckpointDigestError``), builds the model once and
fixes torch's thread count. ``run(unit, attempt, token)`` streams the unit's frames, tracks,
commits the unit's Parquet file through ``OutputStore.commit_unit`` and returns a small
:class:`~pipeline.records.UnitResult` -- never masks through Ray's object store. ``status()``
(answered on a thread of its own) tells which attempts have started and how many frames each
has tracked, which the scheduler's stall timeout reads. With ``videos_at_once`` > 1 the actor
runs that many calls at once on threads and their frames go through the image encoder
together (sam2_core.shared_encoder), for GPUs one video cannot fill.

The worker runs its model as ``config.compute`` asks (precision, compilation, offloaded
memory, input size: :mod:`pipeline.device`) on the devices :func:`pipeline.device.device_plan`
picks from its Ray GPU assignment: one model per assigned GPU, the allocator capped at a
fractional GPU share, and each unit running at once on a slot with its own CUDA stream.
``ready()`` and every result report the settings the worker actually runs with.

Errors while loading the model are kept and reported by ``ready()`` instead of killing the
actor, so the coordinator can tell a wrong checkpoint (the run cannot proceed) from a lost node
(start another worker). Tests inject faults by subclassing and overriding :meth:`on_frame` or
:meth:`commit`; the production class has no test hooks.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from dataclasses import dataclass, field, replace

from pipeline.detectors import DetectorSpec, load_spec
from pipeline.device import ComputeOptions, DevicePlan, apply_plan, device_plan, tracker_options
from pipeline.image_labeling import label_images
from pipeline.labeling import label_video
from pipeline.plan import Unit
from pipeline.records import ObjectChunks, UnitResult, WorkerSettings
from pipeline.retry import TRANSIENT, classify
from pipeline.sink import OutputStore
from sam2_core.hub import CheckpointDigestError, read_checkpoint  # noqa: F401 - the error a wrong checkpoint gives here


@dataclass(frozen=True)
class WorkerInfo:
    """What ``ready()`` reports: where the worker runs and whether its model loaded."""

    pid: int
    node_id: str | None
    load_s: float
    error: str | None = None
    transient: bool = False
    settings: WorkerSettings | None = None


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, passed explicitly (storage options included).

    device: "cpu" or "cuda" (the GPUs Ray assigns; ``gpus`` is the share each worker asked for).
    """

    model: str
    checkpoint: str | None
    checkpoint_digest: str | None
    output: str
    run_id: str
    model_name: str
    storage_options: dict | None = None
    device: str = "cpu"
    torch_threads: int = 1
    cache_dir: str | None = None
    videos_at_once: int = 1
    gpus: float = 0.0
    compute: ComputeOptions = field(default_factory=ComputeOptions)
    detector: DetectorSpec | None = None  # loaded once, for the videos without objects


@dataclass
class _Slot:
    """Where one of the units a worker runs at once is labeled."""

    device: str
    model: object
    encoder: object = None
    stream: object = None


class LabelWorker:
    """Loads the model once (per assigned GPU); labels and commits one unit per ``run`` call."""

    def __init__(self, config: WorkerConfig):
        import torch

        self.config = config
        self.error: BaseException | None = None
        self.load_s = 0.0
        self.encoder = None
        self.detector = None
        self.settings: WorkerSettings | None = None
        self._frames: dict[str, int] = {}
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        torch.set_num_threads(max(1, int(config.torch_threads)))
        started = time.perf_counter()
        try:
            plan = self._device_plan()
            apply_plan(plan)
            checkpoint = None
            if config.checkpoint is not None:  # the digest is checked on the very bytes loaded
                checkpoint = read_checkpoint(
                    config.checkpoint,
                    config.checkpoint_digest,
                    config.storage_options,
                    config.cache_dir,
                )
            self.tracker_options = tracker_options(config.compute)
            models = {device: self._build(device, checkpoint) for device in plan.devices}
            self.model = models[plan.devices[0]]
            if config.detector is not None:
                self.detector = load_spec(config.detector, plan.devices[0], config.storage_options)
            encoders = {}
            if config.videos_at_once > 1:
                from sam2_core.shared_encoder import SharedEncoder

                encoders = {
                    d: SharedEncoder(m, max_batch=plan.slots.count(d)) for d, m in models.items()
                }
                self.encoder = encoders[plan.devices[0]]
            for device in plan.slots:
                stream = torch.cuda.Stream(torch.device(device)) if plan.streams else None
                self._slots.put(_Slot(device, models[device], encoders.get(device), stream))
            self.settings = self._settings(plan)
            self.store = OutputStore(config.output, storage_options=config.storage_options)
        except Exception as err:  # reported by ready(); see the module docstring
            self.error = err
        self.load_s = time.perf_counter() - started

    def _device_plan(self) -> DevicePlan:
        import torch

        cuda = self.config.device.startswith("cuda")
        return device_plan(
            (self.config.gpus or 1.0) if cuda else 0.0,
            _ray_gpu_ids() if cuda else [],
            self.config.videos_at_once,
            cuda and torch.cuda.is_available(),
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            tf32=self.config.compute.tf32,
        )

    def _build(self, device: str, checkpoint):
        from sam2_core import build_model

        model = build_model(
            self.config.model,
            checkpoint=checkpoint,
            device=device,
            image_size=self.config.compute.image_size,
        )
        if self.config.compute.compile and hasattr(model, "compile_hot_parts"):  # SAM 2 only
            model.compile_hot_parts()
        return model

    def _settings(self, plan: DevicePlan) -> WorkerSettings:
        """What this worker runs with, read from its model and tracker options."""
        model, options = self.model, self.tracker_options
        names = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder")
        parts = [getattr(model, name) for name in names if hasattr(model, name)]
        return WorkerSettings(
            devices=tuple(plan.devices),
            image_size=int(model.image_size),
            compiled=all(getattr(p, "_compiled_call_impl", None) is not None for p in parts),
            autocast_dtype=_dtype_name(options.autocast_dtype),
            memory_dtype=_dtype_name(options.memory_dtype),
            storage_device=options.storage_device,
            memory_fraction=plan.memory_fraction,
            streams=plan.streams,
            tf32=plan.tf32,
            detector=None if self.detector is None else self.config.detector.describe(),
        )

    def ready(self) -> WorkerInfo:
        """Where this worker runs, how it runs its model, and whether it loaded (the error, if not)."""
        info = WorkerInfo(os.getpid(), _node_id(), self.load_s, settings=self.settings)
        if self.error is None:
            return info
        return replace(
            info,
            error=f"{type(self.error).__name__}: {self.error}",
            transient=classify(self.error) == TRANSIENT,
        )

    def status(self) -> dict[str, int]:
        """Frames tracked so far by each attempt running now, by its token."""
        return dict(self._frames)

    def on_frame(self, token: str, done: int, total: int) -> None:
        """Called after each tracked frame of the attempt `token` (`done` of `total`)."""
        self._frames[token] = done

    def commit(self, unit: Unit, table, metadata: dict) -> str:
        """Publish the unit's mask table with its commit record; returns the data path."""
        return self.store.commit_unit(unit.unit_id, table, metadata)

    def run(self, unit: Unit, attempt: int = 1, token: str | None = None) -> UnitResult:
        """Label and commit `unit`; return counts and timings. `token` names this attempt in
        ``status()``."""
        if self.error is not None:
            raise self.error
        token = token or f"{unit.unit_id}#{attempt}"
        self._frames[token] = 0
        started = time.perf_counter()
        slot = self._slots.get()  # as many slots as Ray lets calls run at once: never waits
        try:
            with _on_slot(slot):
                table, stats = (label_images if unit.images else label_video)(
                    slot.model,
                    unit.job,
                    run_id=self.config.run_id,
                    model_name=self.config.model_name,
                    object_ids=unit.object_ids,
                    storage_options=self.config.storage_options,
                    tracker_options=self.tracker_options,
                    on_frame=lambda done, total: self.on_frame(token, done, total),
                    encoder=slot.encoder,
                    **({} if unit.images else {"detector": self.detector}),
                )
            tracked = time.perf_counter()
            result = UnitResult(
                unit_id=unit.unit_id,
                video=unit.job.video,
                video_identity=unit.video_identity,
                video_id=unit.video_id,
                object_ids=tuple(unit.object_ids),
                run_id=self.config.run_id,
                model=self.config.model_name,
                attempt=attempt,
                frames=stats.frames,
                rows=stats.rows,
                objects=stats.objects,
                path="",
                node_id=_node_id(),
                pid=os.getpid(),
            )
            path = self.commit(unit, table, result.commit_metadata())
        finally:
            self._frames.pop(token, None)
            self._slots.put(slot)
        done = time.perf_counter()
        return replace(
            result,
            path=path,
            track_s=stats.track_s,
            decode_s=stats.decode_s,
            transfer_s=stats.transfer_s,
            encode_s=stats.encode_s,
            encode_wait_s=stats.encode_wait_s,
            discover_s=stats.discover_s,
            propose_s=stats.propose_s,
            write_s=done - tracked,
            total_s=done - started,
            settings=self.settings,
            chunks=ObjectChunks.of(stats.tracker) if stats.tracker is not None else None,
            # this actor's totals so far (threads share the encoder)
            encoder_images=self.encoder.images if self.encoder is not None else 0,
            encoder_batches=self.encoder.batches if self.encoder is not None else 0,
        )


@contextlib.contextmanager
def _on_slot(slot: _Slot):
    """Run the body on the slot's CUDA stream (if any), registered with its shared encoder."""
    with contextlib.ExitStack() as stack:
        if slot.stream is not None:
            import torch

            stack.enter_context(torch.cuda.stream(slot.stream))
        if slot.encoder is not None:
            stack.enter_context(slot.encoder.user())
        yield


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _ray_gpu_ids() -> list:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:
        return []


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None
