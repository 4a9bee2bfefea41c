"""Which clips each training step uses, and loading them in the background.

Every random choice of a step is drawn from generators seeded by ``(seed, step, ...)``:
clip ``i`` of step ``s``'s global batch from ``(seed, s, 0, i)``, the simulated prompts of
micro-batch ``c`` from ``(seed, s, 1, c)``. A step's data therefore depends on nothing but
its number, so loading can run ahead in a thread, a resumed run sees the clips it would have
seen, and N data-parallel replicas that split a global batch into the same micro-batches as
one process train the same weights (see :class:`BatchPlan`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .clips import ClipBatch, ClipSource, make_batch


@dataclass(frozen=True)
class BatchPlan:
    """How a step's ``batch_size`` clips (the global batch) are split: into micro-batches of
    ``micro_batch`` clips (one forward and backward each, gradients summed), dealt out in
    contiguous runs to ``world_size`` replicas; this is replica ``rank``."""

    batch_size: int
    micro_batch: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} of {self.world_size} replicas is not a replica")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch size {self.batch_size} does not split evenly over {self.world_size} workers"
            )
        per_replica = self.batch_size // self.world_size
        if self.micro_batch < 1 or per_replica % self.micro_batch:
            raise ValueError(
                f"micro-batch {self.micro_batch} does not divide the {per_replica} clips each of "
                f"the {self.world_size} worker(s) takes per step"
            )

    @property
    def num_chunks(self) -> int:
        """Micro-batches per step over all replicas."""
        return self.batch_size // self.micro_batch

    def chunks(self) -> range:
        """This replica's micro-batch indices."""
        per = self.num_chunks // self.world_size
        return range(self.rank * per, (self.rank + 1) * per)

    def clips_of(self, chunk: int) -> range:
        return range(chunk * self.micro_batch, (chunk + 1) * self.micro_batch)


def clip_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The generator that picks clip ``index`` of step ``step``."""
    return np.random.default_rng([seed, step, 0, index])


def prompt_rng(seed: int, step: int, chunk: int) -> np.random.Generator:
    """The generator of micro-batch ``chunk``'s simulated prompts at step ``step``."""
    return np.random.default_rng([seed, step, 1, chunk])


@dataclass
class StepBatches:
    """This replica's micro-batches of one step: (chunk index, batch) pairs."""

    step: int
    chunks: list[tuple[int, ClipBatch]]


def step_batches(
    source: ClipSource, plan: BatchPlan, seed: int, step: int, clip_len: int, image_size: int
) -> StepBatches:
    """Sample and preprocess this replica's clips of step ``step``."""
    chunks = []
    for chunk in plan.chunks():
        clips = [source.sample(clip_rng(seed, step, i), clip_len) for i in plan.clips_of(chunk)]
        chunks.append((chunk, make_batch(clips, image_size)))
    return StepBatches(step, chunks)


class BackgroundBatches:
    """Steps ``first .. last - 1``'s batches, made by one thread up to ``depth`` steps ahead
    (decoding and resizing release the GIL, so the model rarely waits). An error in the
    thread is raised where the batch is taken. Use as a context manager, or call close()."""

    def __init__(self, make: Callable[[int], StepBatches], first: int, last: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(make, first, last), name="clip-loader", daemon=True
        )
        self._thread.start()

    def _fill(self, make: Callable[[int], StepBatches], first: int, last: int) -> None:
        for step in range(first, last):
            try:
                item: StepBatches | BaseException = make(step)
            except BaseException as error:  # handed to the consumer, which raises it
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or isinstance(item, BaseException):
                return

    def __iter__(self) -> Iterator[StepBatches]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
