"""Training clips: a few consecutive frames of a video with the true mask of each object.

A :class:`ClipSource` hands out clips one at a time (frames uint8, masks
bool, at the video's size); :func:`make_batch` turns a list of clips into
model input (frames resized and normalised as the tracker does, masks at the
model's resolution). :class:`SyntheticClips` draws fresh synthetic videos
from a range of seeds, so training never sees the held-out seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..synthetic import SyntheticConfig, SyntheticVideo, generate_video
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, video_frame_to_input


@dataclass
class Clip:
    """frames: T x H x W x 3 uint8; masks: O x T x H x W bool, every object visible on frame 0."""

    frames: np.ndarray
    masks: np.ndarray
    source: str = ""


@dataclass
class ClipBatch:
    """Clips ready for the model.

    images: C x T x 3 x S x S normalised; masks: N x T x S x S float in {0, 1} (one row per object);
    clip_index: N, the clip each object belongs to.
    """

    images: torch.Tensor
    masks: torch.Tensor
    clip_index: torch.Tensor

    @property
    def num_clips(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[0])

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(self.images.to(device), self.masks.to(device), self.clip_index.to(device))


class ClipSource(Protocol):
    """Anything that hands out training clips of a requested length."""

    def sample(self, rng: np.random.Generator, clip_len: int) -> Clip: ...


def _frames_to_input(frames: np.ndarray, size: int) -> torch.Tensor:
    """T x H x W x 3 uint8 -> T x 3 x size x size, preprocessed as the tracker does."""
    if frames.shape[1] == size and frames.shape[2] == size:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std
    return torch.stack([video_frame_to_input(f, size) for f in frames])


def _masks_to_input(masks: np.ndarray, size: int) -> torch.Tensor:
    """O x T x H x W bool -> O x T x size x size float in {0, 1}."""
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()
    if m.shape[-2:] != (size, size):
        o, t, h, w = m.shape
        m = F.interpolate(
            m.reshape(o * t, 1, h, w), size=(size, size), mode="bilinear", align_corners=False
        )
        m = (m >= 0.5).float().reshape(o, t, size, size)
    return m


def make_batch(clips: Sequence[Clip], image_size: int) -> ClipBatch:
    """Stack clips of one length into a ClipBatch at the model's input size."""
    if not clips:
        raise ValueError("make_batch needs at least one clip")
    lengths = {len(c.frames) for c in clips}
    if len(lengths) != 1:
        raise ValueError(f"clips of one batch must have one length, got {sorted(lengths)}")
    images, masks, index = [], [], []
    for i, clip in enumerate(clips):
        if (
            clip.masks.ndim != 4
            or clip.masks.shape[1] != len(clip.frames)
            or clip.masks.shape[0] == 0
        ):
            raise ValueError(
                f"clip {i} ({clip.source}): masks must be O x T x H x W with O >= 1 and T = {len(clip.frames)}, "
                f"got {clip.masks.shape}"
            )
        images.append(_frames_to_input(clip.frames, image_size))
        m = _masks_to_input(clip.masks, image_size)
        keep = (
            m[:, 0].flatten(1).sum(1) > 0
        )  # an object must show on the prompted frame at model size
        if not bool(keep.any()):
            keep[int(m[:, 0].flatten(1).sum(1).argmax())] = True
        masks.append(m[keep])
        index += [i] * int(keep.sum())
    return ClipBatch(torch.stack(images), torch.cat(masks), torch.tensor(index, dtype=torch.long))


@dataclass(frozen=True)
class ClipChoice:
    """Which frames (in clip order) and which objects (rows) of a video make a clip."""

    order: np.ndarray
    objects: np.ndarray


def choose_clip(
    areas: np.ndarray,
    rng: np.random.Generator,
    clip_len: int,
    min_area: int = 20,
    max_objects: int = 3,
    reverse_prob: float = 0.5,
) -> ClipChoice | None:
    """A random clip of ``clip_len`` frames of a video whose objects have ``areas`` (O x T
    pixel counts), whose first frame shows at least one object with ``min_area`` pixels; the
    objects kept are those (at most ``max_objects``), and with ``reverse_prob`` the clip runs
    backwards in time. None if the video has no such clip. Needs only the areas, so a reader
    can pick a clip before decoding any frame."""
    num_frames = areas.shape[1]
    if num_frames < clip_len:
        return None
    reverse = bool(rng.random() < reverse_prob)
    first_of = np.arange(num_frames - clip_len + 1)
    firsts = first_of + (clip_len - 1 if reverse else 0)
    ok = (areas[:, firsts] >= min_area).any(axis=0)
    if not ok.any():
        return None
    start = int(rng.choice(first_of[ok]))
    order = np.arange(start, start + clip_len)
    if reverse:
        order = order[::-1]
    visible = np.flatnonzero(areas[:, order[0]] >= min_area)
    if len(visible) > max_objects:
        visible = np.sort(rng.choice(visible, size=max_objects, replace=False))
    return ClipChoice(order, visible)


def cut_clip(
    frames: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    clip_len: int,
    min_area: int = 20,
    max_objects: int = 3,
    reverse_prob: float = 0.5,
    source: str = "",
) -> Clip | None:
    """A clip of a video held in memory, chosen by :func:`choose_clip`. None if it has none."""
    areas = masks.reshape(masks.shape[0], len(frames), -1).sum(-1)  # O x T
    choice = choose_clip(areas, rng, clip_len, min_area, max_objects, reverse_prob)
    if choice is None:
        return None
    return Clip(frames[choice.order], masks[choice.objects][:, choice.order], source=source)


@dataclass
class SyntheticClips:
    """Clips from synthetic videos of seeds ``first_seed .. first_seed + num_seeds - 1`` (None:
    an unbounded range), generated on demand. Rendering a video costs more than cutting a clip,
    so up to ``pool_size`` recent videos are kept and each is used for ``reuse`` clips on
    average (1: a fresh video for every clip). ``generate`` (seed -> video) replaces
    ``generate_video(seed, config)``, e.g. a :class:`~sam2_core.synthetic_families.FamilyMixture`."""

    config: SyntheticConfig
    first_seed: int = 1000
    num_seeds: int | None = None
    min_area: int = 20
    max_objects: int = 3
    reverse_prob: float = 0.5
    pool_size: int = 32
    reuse: float = 1.0
    generate: Callable[[int], SyntheticVideo] | None = None
    _pool: list = field(default_factory=list, repr=False)

    def _video(self, rng: np.random.Generator):
        fresh = not self._pool or rng.random() < 1.0 / max(self.reuse, 1.0)
        if not fresh:
            return self._pool[int(rng.integers(len(self._pool)))]
        span = self.num_seeds if self.num_seeds is not None else 10**9
        seed = self.first_seed + int(rng.integers(span))
        video = self.generate(seed) if self.generate else generate_video(seed, self.config)
        if self.reuse > 1.0:
            if len(self._pool) < self.pool_size:
                self._pool.append(video)
            else:
                self._pool[int(rng.integers(len(self._pool)))] = video
        return video

    def sample(self, rng: np.random.Generator, clip_len: int) -> Clip:
        for _ in range(100):
            video = self._video(rng)
            clip = cut_clip(
                video.frames,
                video.masks,
                rng,
                clip_len,
                self.min_area,
                self.max_objects,
                self.reverse_prob,
                source=f"synthetic seed {video.seed}",
            )
            if clip is not None:
                return clip
        raise ValueError(
            f"no synthetic video among 100 draws has a {clip_len}-frame clip with a visible object; "
            f"check the SyntheticConfig (num_frames={self.config.num_frames})"
        )


@dataclass
class VideoClips:
    """Clips from videos held in memory: ``videos`` is a list of (frames T x H x W x 3 uint8,
    masks O x T x H x W bool)."""

    videos: list[tuple[np.ndarray, np.ndarray]]
    min_area: int = 20
    max_objects: int = 3
    reverse_prob: float = 0.5

    def sample(self, rng: np.random.Generator, clip_len: int) -> Clip:
        if not self.videos:
            raise ValueError("VideoClips has no videos")
        for _ in range(100):
            k = int(rng.integers(len(self.videos)))
            frames, masks = self.videos[k]
            clip = cut_clip(
                frames,
                masks,
                rng,
                clip_len,
                self.min_area,
                self.max_objects,
                self.reverse_prob,
                f"video {k}",
            )
            if clip is not None:
                return clip
        raise ValueError(
            f"no video has a {clip_len}-frame clip with an object of >= {self.min_area} pixels on its first frame"
        )
