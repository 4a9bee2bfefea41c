"""``jobs train --data SPEC``: which training data, and its split into training and held-out videos.

SPEC is ``KIND:URI`` or ``synthetic``:

- ``run:URI`` the ``--output`` of a ``jobs label`` run (its masks as ground truth, its
  videos as its manifest names them);
- ``davis:URI`` a DAVIS / YouTube-VOS style folder (``JPEGImages/<video>/``,
  ``Annotations/<video>/``);
- ``sav:URI`` an SA-V style folder (``<video>.mp4`` and ``<video>_manual.json``);
- ``synthetic`` the synthetic generator;
- ``families:NAME[=WEIGHT],...`` a mixture of synthetic scene families
  (:mod:`sam2_core.synthetic_families`), e.g. ``families:blobs=2,randomised,crowded``.

URI is a local path or any fsspec URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.training.videos import (
    TrainingVideo,
    check_frames,
    davis_videos,
    run_videos,
    sav_videos,
)

READERS = {"run": run_videos, "davis": davis_videos, "sav": sav_videos}
SYNTHETIC = "synthetic"
FAMILIES = "families"
GENERATED = (SYNTHETIC, FAMILIES)  # drawn by seed, not read


@dataclass(frozen=True)
class DataSpec:
    """One ``--data`` value: ``kind`` in READERS, "synthetic" or "families"; ``uri`` ("" for
    synthetic, the family list for families)."""

    kind: str
    uri: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == SYNTHETIC else f"{self.kind}:{self.uri}"


def parse_data_spec(text: str) -> DataSpec:
    """'davis:/data/DAVIS' -> DataSpec('davis', '/data/DAVIS'); ValueError naming the value."""
    text = (text or "").strip()
    kinds = ", ".join(f"{k}:URI" for k in READERS) + f", {SYNTHETIC}, {FAMILIES}:NAME,..."
    if not text:
        raise ValueError(f"empty --data spec; give one of {kinds}")
    if text == SYNTHETIC:
        return DataSpec(SYNTHETIC)
    kind, sep, uri = text.partition(":")
    if kind == FAMILIES and sep:
        from sam2_core.synthetic_families import parse_family_weights

        try:
            parse_family_weights(uri)
        except ValueError as err:
            raise ValueError(f"--data {text!r}: {err}") from None
        return DataSpec(FAMILIES, uri.strip())
    if not sep or kind not in READERS:
        raise ValueError(f"--data {text!r}: unknown kind {kind!r}; give one of {kinds}")
    if not uri.strip():
        raise ValueError(f"--data {text!r}: no location after {kind}:")
    return DataSpec(kind, uri.strip())


@dataclass(frozen=True)
class TrainingData:
    """Videos to train on and videos held out for J&F at checkpoints (split by video)."""

    train: list[TrainingVideo]
    heldout: list[TrainingVideo]


def load_training_data(
    specs: Sequence[DataSpec], storage_options: dict | None = None, heldout: int = 0, seed: int = 0
) -> TrainingData:
    """Read every spec's videos, check each video's frames against its masks, and hold out
    ``heldout`` videos chosen by ``seed`` (the same ones on every run and resume)."""
    if not specs or any(s.kind in GENERATED for s in specs):
        raise ValueError("load_training_data reads run:, davis: and sav: specs only")
    videos: list[TrainingVideo] = []
    for spec in specs:
        found = READERS[spec.kind](spec.uri, storage_options)
        if not found:
            raise ValueError(f"--data {spec}: no videos with masks")
        videos += found
    seen: dict[str, str] = {}
    for video in videos:
        if video.video_id in seen:
            raise ValueError(
                f"video_id {video.video_id!r} is in both {seen[video.video_id]} and {video.masks_from}; "
                "held-out scores need one name per video"
            )
        seen[video.video_id] = video.masks_from
    for video in videos:
        check_frames(video, storage_options)
    if heldout >= len(videos):
        raise ValueError(
            f"--eval-videos {heldout} would hold out all {len(videos)} video(s) and leave none to train on"
        )
    order = np.random.default_rng(seed).permutation(len(videos))
    held = sorted(int(i) for i in order[:heldout])
    return TrainingData(
        [v for i, v in enumerate(videos) if i not in held], [videos[i] for i in held]
    )
