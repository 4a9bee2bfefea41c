"""The frame-source protocol the tracker pulls frames from.

Implementations live outside ``sam2_core`` (PyAV readers and frame folders
in ``pipeline``, in-memory arrays in tests); the tracker only needs random
access by index, the frame count and the original frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


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
