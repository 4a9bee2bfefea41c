"""The Ray worker: one model per actor process, one unit per call.

``LabelWorker`` is a plain class; the coordinator wraps it with ``ray.remote``
and the CPU/GPU share each worker needs. ``__init__`` reads the checkpoint
through ``sam2_core.hub`` (cached per node under its digest; the SHA-256 of the
bytes it loads must be the digest the run was planned with, else
``CheckpointDigestError``), builds the model once and fixes torch's thread
count. ``run(unit, attempt)`` streams the unit's frames, tracks,
commits the unit's Parquet file through ``OutputStore.commit_unit`` and
returns a small dict -- never masks through Ray's object store. With
``videos_at_once`` > 1 the actor runs that many calls at once on threads
(the coordinator makes it a threaded actor) and their frames go through the
image encoder together (sam2_core.shared_encoder), for GPUs one video cannot
fill.

Errors while loading the model are kept and reported by ``ready()`` instead
of killing the actor, so the coordinator can tell a wrong checkpoint (the run
cannot proceed) from a lost node (start another worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.labeling import label_video
from pipeline.plan import Unit
from pipeline.retry import TRANSIENT, classify
from pipeline.sink import OutputStore
from sam2_core.hub import CheckpointDigestError, read_checkpoint  # noqa: F401 - the error a wrong checkpoint gives here


@dataclass(frozen=True)
class Fault:
    """A fault to inject on one attempt of one video's unit. Tests only.

    kind: "exit" (the worker process dies, os._exit) or "pause" (the worker writes
    ``marker`` -- its node id and pid as JSON -- then sleeps ``seconds``) after
    ``at_frame`` tracked frames; "oserror" raises OSError just before the commit.
    """

    video_id: str
    kind: str
    attempt: int = 1
    at_frame: int = 1
    seconds: float = 60.0
    marker: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("exit", "pause", "oserror"):
            raise ValueError(f"unknown fault kind {self.kind!r}")


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
    faults: tuple[Fault, ...] = field(default_factory=tuple)
    videos_at_once: int = 1


class LabelWorker:
    """Loads the model once; labels and commits one unit per ``run`` call."""

    def __init__(self, config: WorkerConfig):
        import torch

        self.config = config
        self.error: BaseException | None = None
        self.load_s = 0.0
        self.encoder = None
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

    def ready(self) -> dict:
        """Where this worker runs and whether its model loaded (error type and message if not)."""
        info = {"pid": os.getpid(), "node_id": _node_id(), "load_s": self.load_s}
        if self.error is not None:
            info["error_type"] = type(self.error).__name__
            info["error"] = str(self.error)
            info["transient"] = classify(self.error) == TRANSIENT
        return info

    def run(self, unit: Unit, attempt: int = 1) -> dict:
        """Label and commit `unit`; return counts and timings (small)."""
        if self.error is not None:
            raise self.error
        started = time.perf_counter()
        fault = next(
            (f for f in self.config.faults if f.video_id == unit.video_id and f.attempt == attempt),
            None,
        )
        on_frame = _fault_hook(fault) if fault is not None and fault.kind != "oserror" else None
        with self.encoder.user() if self.encoder is not None else contextlib.nullcontext():
            table, stats = label_video(
                self.model,
                unit.job,
                run_id=self.config.run_id,
                model_name=self.config.model_name,
                object_ids=unit.object_ids,
                storage_options=self.config.storage_options,
                on_frame=on_frame,
                encoder=self.encoder,
            )
        tracked = time.perf_counter()
        if fault is not None and fault.kind == "oserror":
            raise OSError(
                f"injected storage error committing unit {unit.unit_id} (attempt {attempt})"
            )
        metadata = {
            "unit_id": unit.unit_id,
            "video": unit.job.video,
            "video_identity": unit.video_identity,
            "video_id": unit.video_id,
            "object_ids": list(unit.object_ids),
            "run_id": self.config.run_id,
            "model": self.config.model_name,
            "attempt": attempt,
            "frames": stats.frames,
            "rows": stats.rows,
            "node_id": _node_id(),
            "pid": os.getpid(),
        }
        path = self.store.commit_unit(unit.unit_id, table, metadata)
        done = time.perf_counter()
        batching = {}
        if self.encoder is not None:  # this actor's totals so far (threads share the encoder)
            batching = {"encoder_images": self.encoder.images, "encoder_batches": self.encoder.batches}
        return {
            **metadata,
            **batching,
            "path": path,
            "objects": stats.objects,
            "track_s": tracked - started,
            "decode_s": stats.decode_s,
            "encode_s": stats.encode_s,
            "commit_s": done - tracked,
            "total_s": done - started,
        }


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _fault_hook(fault: Fault):
    def hook(done: int, total: int) -> None:
        if done != fault.at_frame:
            return
        if fault.kind == "exit":
            os._exit(17)
        if fault.marker:  # written whole, then renamed: a reader never sees half of it
            tmp = Path(fault.marker + ".tmp")
            tmp.write_text(json.dumps({"node_id": _node_id(), "pid": os.getpid()}))
            os.replace(tmp, fault.marker)
        time.sleep(fault.seconds)

    return hook
