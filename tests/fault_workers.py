"""Workers that inject faults, for fault tests: ``LabelWorker`` subclasses made by
:func:`faulty_worker`, handed to ``run_labeling(..., worker_class=...)``. The production
worker has no test hooks; these override its ``on_frame`` and ``commit`` seams."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.worker import LabelWorker


@dataclass(frozen=True)
class Fault:
    """A fault on one attempt of one video's unit.

    kind: "exit" (the worker process dies, os._exit) or "pause" (the worker writes ``marker``
    -- its node id and pid as JSON -- then sleeps ``seconds``, tracking nothing) after
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


def faulty_worker(*faults: Fault) -> type[LabelWorker]:
    """A LabelWorker class that injects `faults` (matched by video id and attempt)."""

    class FaultyWorker(LabelWorker):
        # by attempt token: with several units at once, threads share the worker
        armed: dict[str, Fault | None] = {}

        def run(self, unit, attempt=1, token=None):
            token = token or f"{unit.unit_id}#{attempt}"
            self.armed[token] = next(
                (f for f in faults if f.video_id == unit.video_id and f.attempt == attempt), None
            )
            return super().run(unit, attempt, token)

        def on_frame(self, token, done, total):
            super().on_frame(token, done, total)
            fault = self.armed.get(token)
            if fault is None or fault.kind == "oserror" or done != fault.at_frame:
                return
            if fault.kind == "exit":
                os._exit(17)
            if fault.marker:  # written whole, then renamed: a reader never sees half of it
                tmp = Path(fault.marker + ".tmp")
                tmp.write_text(json.dumps({"node_id": _node_id(), "pid": os.getpid()}))
                os.replace(tmp, fault.marker)
            time.sleep(fault.seconds)

        def commit(self, unit, table, metadata):
            token = f"{unit.unit_id}#{metadata['attempt']}"
            fault = self.armed.get(token)
            if fault is not None and fault.kind == "oserror":
                raise OSError(f"injected storage error committing unit {unit.unit_id}")
            return super().commit(unit, table, metadata)

    return FaultyWorker


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id()


def _pickle_by_value() -> None:
    """Ray workers cannot import this test module: ship its code with the class."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_pickle_by_value()


def tight_memory_worker(max_objects: int) -> type[LabelWorker]:
    """A LabelWorker whose device seems to hold at most ``max_objects`` objects in memory
    attention at once: a larger chunk raises ``torch.OutOfMemoryError`` there (simulated on the
    CPU, as CUDA raises it), so the tracker retries the frame with smaller chunks."""

    class TightMemoryWorker(LabelWorker):
        def _build(self, device, checkpoint):
            import torch

            model = super()._build(device, checkpoint)
            attention = model.memory_attention
            original = attention.forward

            def forward(*args, **kwargs):
                if args[2].shape[0] > max_objects:  # memory: B x M x C
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                return original(*args, **kwargs)

            attention.forward = forward
            return model

    return TightMemoryWorker
