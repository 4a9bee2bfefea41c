"""One image encoder shared by tracking sessions on several threads, batching their frames.

When one video cannot keep a GPU busy, a worker tracks several videos at once, one thread
each. Every session still asks for one frame's features at a time; a :class:`SharedEncoder`
gathers the frames the sessions ask for at about the same time and encodes them as one batch.

The batching rule: a request waits until every registered session has a frame waiting (or
``max_batch`` frames wait), or until ``max_wait_s`` has passed since it arrived; then its thread
encodes it together with the other waiting frames. A session that is busy elsewhere (reading
its first frame, committing its output) therefore delays the others by at most ``max_wait_s``.

On CUDA each session may run on a stream of its own: the encoding thread's stream waits for
each request's upload, and each requester's stream waits for the encoding before it reads
the features (events, so no thread blocks on the device).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .modeling.sam2 import ImageFeatures, SAM2Model


@dataclass(eq=False)
class _Request:
    image: torch.Tensor
    taken: bool = False
    finished: bool = False
    result: ImageFeatures | None = None
    error: BaseException | None = None
    uploaded: torch.cuda.Event | None = None  # on the requester's stream, when on CUDA
    encoded: torch.cuda.Event | None = None  # on the encoding thread's stream


class SharedEncoder:
    """Callable like ``model.encode_image`` on a 1 x 3 x S x S image, safe from many threads."""

    def __init__(self, model: SAM2Model, max_batch: int = 8, max_wait_s: float = 0.1):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._users = 0
        self.batches = 0  # encoder calls made, and images encoded: how well batching works
        self.images = 0

    @contextlib.contextmanager
    def user(self) -> Iterator[SharedEncoder]:
        """Register one session for as long as it tracks, so requests know whom to wait for."""
        with self._cond:
            self._users += 1
        try:
            yield self
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def __call__(self, image: torch.Tensor) -> ImageFeatures:
        if image.shape[0] != 1:
            raise ValueError(
                f"SharedEncoder takes one image at a time, got a batch of {image.shape[0]}"
            )
        request = _Request(image)
        if image.is_cuda:
            request.uploaded = torch.cuda.Event()
            request.uploaded.record(torch.cuda.current_stream(image.device))
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            batch = self._wait_for_batch(request)
        if batch is not None:
            self._encode(batch)
        with self._cond:
            while not request.finished:
                self._cond.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        if request.encoded is not None:
            stream = torch.cuda.current_stream(image.device)
            stream.wait_event(request.encoded)
            for x in request.result.levels + request.result.pos:
                x.record_stream(stream)  # made on another stream, read and freed on this one
        return request.result

    def _wait_for_batch(self, request: _Request) -> list[_Request] | None:
        """Under the lock: the batch this thread must encode, or None once another thread took
        the request."""
        deadline = time.monotonic() + self.max_wait_s
        while not request.taken:
            now = time.monotonic()
            enough = len(self._pending) >= min(max(self._users, 1), self.max_batch)
            if enough or now >= deadline:
                others = [r for r in self._pending if r is not request][: self.max_batch - 1]
                batch = [request, *others]
                for r in batch:
                    r.taken = True
                    self._pending.remove(r)
                return batch
            self._cond.wait(deadline - now)
        return None

    def _encode(self, batch: list[_Request]) -> None:
        try:
            for r in batch:
                if r.uploaded is not None:
                    torch.cuda.current_stream(r.image.device).wait_event(r.uploaded)
            feats = self.model.encode_image(torch.cat([r.image for r in batch]))
            encoded = None
            if feats.embedding.is_cuda:
                encoded = torch.cuda.Event()
                encoded.record(torch.cuda.current_stream(feats.embedding.device))
            for k, r in enumerate(batch):
                # A copy, not a view: a session caches its frames' features, and a view would
                # keep the whole batch's features alive for as long as any one is cached.
                r.result = feats.take(k) if len(batch) == 1 else feats.take(k).clone()
                r.encoded = encoded
        except BaseException as err:  # every waiting session gets the error
            for r in batch:
                r.error = err
        with self._cond:
            self.batches += 1
            self.images += len(batch)
            for r in batch:
                r.finished = True
            self._cond.notify_all()
