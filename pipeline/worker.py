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

Errors while loading the model are kept and reported by ``ready()`` instead of killing the
actor, so the coordinator can tell a wrong checkpoint (the run cannot proceed) from a lost node
(start another worker). Tests inject faults by subclassing and overriding :meth:`on_frame` or
:meth:`commit`; the production class has no test hooks.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace

from pipeline.image_labeling import label_images
from pipeline.labeling import label_video
from pipeline.plan import Unit
from pipeline.records import UnitResult
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


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, passed explicitly (storage options included)."""

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


class LabelWorker:
    """Loads the model once; labels and commits one unit per ``run`` call."""

    def __init__(self, config: WorkerConfig):
        import torch

        self.config = config
        self.error: BaseException | None = None
        self.load_s = 0.0
        self.encoder = None
        self._frames: dict[str, int] = {}
        torch.set_num_threads(max(1, int(config.torch_threads)))
        started = time.perf_counter()
        try:
            from sam2_core import build_model

            checkpoint = None
            if config.checkpoint is not None:  # the digest is checked on the very bytes loaded
                checkpoint = read_checkpoint(
                    config.checkpoint,
                    config.checkpoint_digest,
                    config.storage_options,
                    config.cache_dir,
                )
            self.model = build_model(config.model, checkpoint=checkpoint, device=config.device)
            if config.videos_at_once > 1:
                from sam2_core.shared_encoder import SharedEncoder

                self.encoder = SharedEncoder(self.model, max_batch=config.videos_at_once)
            self.store = OutputStore(config.output, storage_options=config.storage_options)
        except Exception as err:  # reported by ready(); see the module docstring
            self.error = err
        self.load_s = time.perf_counter() - started

    def ready(self) -> WorkerInfo:
        """Where this worker runs and whether its model loaded (the error, if not)."""
        info = WorkerInfo(os.getpid(), _node_id(), self.load_s)
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
        try:
            with self.encoder.user() if self.encoder is not None else contextlib.nullcontext():
                table, stats = (label_images if unit.images else label_video)(
                    self.model,
                    unit.job,
                    run_id=self.config.run_id,
                    model_name=self.config.model_name,
                    object_ids=unit.object_ids,
                    storage_options=self.config.storage_options,
                    on_frame=lambda done, total: self.on_frame(token, done, total),
                    encoder=self.encoder,
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
        done = time.perf_counter()
        return replace(
            result,
            path=path,
            track_s=tracked - started,
            decode_s=stats.decode_s,
            encode_s=stats.encode_s,
            commit_s=done - tracked,
            total_s=done - started,
            # this actor's totals so far (threads share the encoder)
            encoder_images=self.encoder.images if self.encoder is not None else 0,
            encoder_batches=self.encoder.batches if self.encoder is not None else 0,
        )


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None
