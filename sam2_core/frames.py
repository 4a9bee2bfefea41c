"""The frame-source protocol the tracker pulls frames from, and a reader that
prefetches the frames a propagation will ask for next.

Implementations live outside ``sam2_core`` (PyAV readers and frame folders
in ``pipeline``, in-memory arrays in tests); the tracker only needs random
access by index, the frame count and the original frame size.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .transforms import video_frame_to_input


@runtime_checkable
class FrameSource(Protocol):
    """A video as an indexable sequence of RGB frames (H x W x 3, uint8)."""

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class ArrayFrames:
    """Frames already in memory: an N x H x W x 3 uint8 array or a list of frames."""

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray]):
        if len(frames) == 0:
            raise ValueError("ArrayFrames needs at least one frame")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] != 3:
            raise ValueError(f"frames must be H x W x 3, got shape {first.shape}")
        self._frames = frames
        self._height, self._width = int(first.shape[0]), int(first.shape[1])

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self._frames):
            raise IndexError(f"frame index {index} out of range for a video of {len(self)} frames")
        return np.asarray(self._frames[index], dtype=np.uint8)


class FramePrefetcher:
    """Reads and preprocesses the frames a propagation will ask for next, on one thread.

    The frame source is only touched under ``lock``, so readers need not be thread-safe.
    With ``pin`` the frames come in page-locked memory (for a CUDA device: the upload then
    does not block), pinned on the reading thread. ``resize``: see ``video_frame_to_input``.
    """

    def __init__(
        self,
        frames: FrameSource,
        size: int,
        depth: int,
        pin: bool = False,
        resize: str = "pillow",
    ):
        self.frames, self.size, self.depth, self.pin = frames, size, depth, pin
        self.resize = resize
        self.lock = threading.Lock()
        self._plan: deque[int] = deque()
        self._pending: dict[int, Future] = {}
        self._pool: ThreadPoolExecutor | None = None

    def load(self, frame: int) -> torch.Tensor:
        with self.lock:
            image = self.frames[frame]
        tensor = video_frame_to_input(image, self.size, self.resize)
        return tensor.pin_memory() if self.pin else tensor

    def upcoming(self) -> int | None:
        """The frame the running propagation will ask for next (None outside a propagation)."""
        return self._plan[0] if self._plan else None

    def plan(self, order: Iterable[int]) -> None:
        self._plan = deque(order)
        self._pending.clear()
        self._top_up()

    def take(self, frame: int) -> torch.Tensor:
        """The preprocessed frame (3 x S x S): prefetched when it was among the next in the plan
        (planned frames before it, which the propagation passed without reading, are dropped)."""
        self.passed(frame)
        future = self._pending.pop(frame, None)
        self._top_up()
        return future.result() if future is not None else self.load(frame)

    def passed(self, frame: int) -> None:
        """The propagation is at ``frame``: drop it and the planned frames before it from the plan
        (and their reads), without reading it here (someone else did)."""
        head = list(itertools.islice(self._plan, self.depth + 2))
        if frame in head:
            for _ in range(head.index(frame) + 1):
                passed = self._plan.popleft()
                if passed != frame:
                    self._pending.pop(passed, None)

    def _top_up(self) -> None:
        if self.depth <= 0:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-prefetch")
        for frame in list(self._plan)[: self.depth]:
            if frame not in self._pending:
                self._pending[frame] = self._pool.submit(self.load, frame)

    def close(self) -> None:
        self._plan.clear()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
