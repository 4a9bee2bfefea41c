"""Training videos with ground truth, from what users have, as a clip source for the trainer.

Every reader ends in a mask table (MASK_SCHEMA rows, RLE text) plus, per video, where its
frames are: a label run's committed masks and the videos its manifest names; a DAVIS /
YouTube-VOS folder (``JPEGImages/<video>/`` frames, ``Annotations/<video>/`` indexed PNGs,
read by :func:`pipeline.exports.davis.read_davis_review`); an SA-V folder (``<video>.mp4``
beside ``<video>_manual.json``, read by :func:`pipeline.exports.sav.read_sav_review`).
Masks stay encoded and frames on storage until a clip is cut: :class:`TableClips` picks a
clip from the per-frame areas alone, then decodes just its frames and masks, so a data set
need not fit in memory. Every video is opened once up front to check that it has at least
as many frames as its masks and the same size, so a mismatch is an error naming both files
before training starts, not a crash hours in.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.exports.davis import ANNOTATIONS_DIR, read_davis_review
from pipeline.exports.reader import visible
from pipeline.exports.reviewed import reviewed_table
from pipeline.exports.sav import SAV_SUFFIX, read_sav_review
from pipeline.masks import decode_mask
from pipeline.runs import run_jobs
from pipeline.sink import FAILURES_FILE, OutputStore, read_masks
from pipeline.storage import join, safe_uri, url_to_fs
from pipeline.video import VideoReader, open_video
from sam2_core.frames import FrameSource
from sam2_core.training.clips import Clip, choose_clip

JPEG_DIR = "JPEGImages"


class SteppedFrames:
    """Every ``step``-th frame of an opened video, as a frame source of its own."""

    def __init__(self, frames: FrameSource, step: int):
        self._frames, self.step = frames, step
        self.height, self.width = frames.height, frames.width

    def __len__(self) -> int:
        return (len(self._frames) - 1) // self.step + 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        return self._frames[index * self.step]


@dataclass(frozen=True)
class TrainingVideo:
    """One video's ground truth, kept encoded: ``table`` holds its mask rows; ``rows`` and
    ``areas`` are O x T (objects in ``object_ids`` order, frames 0..T-1): the row of each
    drawn mask and its area (-1 and 0 where the object is not drawn). ``frame_step``: video
    frames per training frame, for sources that annotate only every s-th frame (SA-V: 4);
    training frame t is video frame t x frame_step, and clips run over the annotated frames."""

    video_id: str
    frames_uri: str
    masks_from: str
    height: int
    width: int
    object_ids: tuple[int, ...]
    table: pa.Table = field(repr=False)
    rows: np.ndarray = field(repr=False)
    areas: np.ndarray = field(repr=False)
    frame_step: int = 1

    @property
    def num_frames(self) -> int:
        return int(self.areas.shape[1])

    def frames(self, reader: FrameSource) -> FrameSource:
        """The training frames of the opened video ``reader`` (every ``frame_step``-th)."""
        return reader if self.frame_step == 1 else SteppedFrames(reader, self.frame_step)

    def masks(self, rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Decoded masks of objects ``rows`` on ``frames``: len(rows) x len(frames) x H x W bool."""
        out = np.zeros((len(rows), len(frames), self.height, self.width), bool)
        rle = self.table.column("rle")
        for i, row in enumerate(rows):
            for j, frame in enumerate(frames):
                if self.rows[row, frame] >= 0:
                    out[i, j] = decode_mask(
                        rle[int(self.rows[row, frame])].as_py(), self.height, self.width
                    )
        return out


def videos_from_table(
    table: pa.Table,
    frames_uri: dict[str, str],
    masks_from: str,
    frame_steps: dict[str, int] | None = None,
) -> list[TrainingVideo]:
    """Group mask rows by video; ``frames_uri`` says where each video's frames are;
    ``frame_steps`` the step of a video annotated only every s-th frame (its rows' frame
    indices are multiples of s). A row the model judged absent (``present`` false) counts as
    not drawn."""
    videos = []
    frame_steps = frame_steps or {}
    for video_id in sorted(set(table.column("video_id").to_pylist())):
        step = int(frame_steps.get(video_id, 1))
        part = table.filter(pc.equal(table.column("video_id"), video_id))
        rows = part.select(
            ["object_id", "frame_index", "height", "width", "area", "present"]
        ).to_pylist()
        sizes = {(r["height"], r["width"]) for r in rows}
        if len(sizes) != 1:
            raise ValueError(
                f"{masks_from}: video {video_id!r} has masks of several sizes {sorted(sizes)}"
            )
        ((height, width),) = sizes
        object_ids = tuple(sorted({int(r["object_id"]) for r in rows}))
        length = max(int(r["frame_index"]) for r in rows) // step + 1
        where = np.full((len(object_ids), length), -1, np.int64)
        areas = np.zeros((len(object_ids), length), np.int64)
        row_of = {oid: i for i, oid in enumerate(object_ids)}
        for k, r in enumerate(rows):
            if visible(r["present"], r["area"]):
                i, t = row_of[int(r["object_id"])], int(r["frame_index"]) // step
                where[i, t], areas[i, t] = k, int(r["area"])
        if video_id not in frames_uri:
            raise ValueError(f"{masks_from}: no video frames known for video {video_id!r}")
        videos.append(
            TrainingVideo(
                video_id,
                frames_uri[video_id],
                masks_from,
                int(height),
                int(width),
                object_ids,
                part,
                where,
                areas,
                step,
            )
        )
    return videos


def check_frames(video: TrainingVideo, storage_options: dict | None = None) -> None:
    """Open the video once: it must hold at least the masked frames, at the masks' size."""
    with open_video(video.frames_uri, storage_options, cache_frames=1) as reader:
        if (reader.height, reader.width) != (video.height, video.width):
            raise ValueError(
                f"video {safe_uri(video.frames_uri)} is {reader.width}x{reader.height} but its masks "
                f"in {video.masks_from} (video_id {video.video_id!r}) are {video.width}x{video.height}"
            )
        last = (video.num_frames - 1) * video.frame_step
        if len(reader) <= last:
            raise ValueError(
                f"video {safe_uri(video.frames_uri)} has {len(reader)} frames but its masks in "
                f"{video.masks_from} (video_id {video.video_id!r}) reach frame {last}"
            )


# ------------------------------------------------------------------------------------ readers


def run_videos(run_uri: str, storage_options: dict | None = None) -> list[TrainingVideo]:
    """A label run's committed masks as ground truth, its videos as its manifest names them.
    A run with failed units is refused: their objects have no masks, and would be learnt
    as absent."""
    store = OutputStore(run_uri, storage_options)
    failures = store.read_failures()
    if failures:
        shown = ", ".join(sorted({f.video_id for f in failures})[:5])
        raise ValueError(
            f"{join(run_uri, FAILURES_FILE)}: {len(failures)} unit(s) of this run failed (videos {shown}); "
            "their objects have no masks and would be learnt as absent. Finish the run (run the same "
            "`jobs label` command again) before training on it"
        )
    table = read_masks(run_uri, storage_options)
    if table.num_rows == 0:
        raise FileNotFoundError(
            f"{run_uri}: no committed masks (not the --output of a `jobs label` run?)"
        )
    _, jobs = run_jobs(run_uri, storage_options)
    return videos_from_table(
        table, {vid: job.video for vid, job in jobs.items()}, f"{run_uri} (mask table)"
    )


def davis_videos(root: str, storage_options: dict | None = None) -> list[TrainingVideo]:
    """``root/JPEGImages/<video>/`` frames with ``root/Annotations/<video>/`` indexed PNGs,
    one PNG per frame (frame i of the video is the i-th JPEG, as ``open_video`` reads a folder)."""
    export = read_davis_review(root, storage_options)
    table = reviewed_table(export, run_id="davis")
    fs, base = url_to_fs(root, storage_options)
    frames_uri = {}
    for video_id, covered in export.frames.items():
        folder = join(root, JPEG_DIR, video_id)
        if not fs.isdir(posixpath.join(base, JPEG_DIR, video_id)):
            raise FileNotFoundError(
                f"{folder}: no frames folder for the annotations of video {video_id!r}"
            )
        with open_video(folder, storage_options, cache_frames=1) as reader:
            length = len(reader)
        missing = sorted(set(range(length)) - covered)
        if missing:
            raise FileNotFoundError(
                f"{join(root, ANNOTATIONS_DIR, video_id, f'{missing[0]:05d}.png')}: missing annotation of frame "
                f"{missing[0]} of {folder} ({len(missing)} of {length} frames have no PNG)"
            )
        frames_uri[video_id] = folder
    empty = sorted(set(export.frames) - set(table.column("video_id").to_pylist()))
    if empty:
        raise ValueError(f"{join(root, ANNOTATIONS_DIR, empty[0])}: no object drawn on any frame")
    return videos_from_table(table, frames_uri, f"{root} (DAVIS annotations)")


def sav_videos(root: str, storage_options: dict | None = None) -> list[TrainingVideo]:
    """SA-V style: ``<video>.mp4`` beside ``<video>_manual.json``: every frame annotated (as
    ``jobs export --format sav`` writes) or every s-th (SA-V's own files: s = 4), when clips run
    over the annotated frames."""
    export = read_sav_review(root, storage_options)
    table = reviewed_table(export, run_id="sav")
    frames_uri = {}
    fs, base = url_to_fs(root, storage_options)
    for video_id in export.frames:
        name = f"{video_id}.mp4"
        if not fs.exists(posixpath.join(base, name)):
            raise FileNotFoundError(
                f"{join(root, name)}: video not found for {join(root, video_id + SAV_SUFFIX)}"
            )
        frames_uri[video_id] = join(root, name)
    return videos_from_table(table, frames_uri, f"{root} (SA-V masklets)", export.frame_steps)


# ------------------------------------------------------------------------------------ clips


class TableClips:
    """A :class:`~sam2_core.training.clips.ClipSource` over :class:`TrainingVideo` s: a clip
    is chosen from the areas, then only its frames are decoded (in increasing order, reversed
    afterwards for a backward clip) and only its masks. Up to ``open_videos`` readers stay
    open between clips."""

    def __init__(
        self,
        videos: list[TrainingVideo],
        storage_options: dict | None = None,
        min_area: int = 20,
        max_objects: int = 3,
        reverse_prob: float = 0.5,
        open_videos: int = 4,
    ):
        if not videos:
            raise ValueError("no training videos")
        self.videos = videos
        self.storage_options = storage_options
        self.min_area = min_area
        self.max_objects = max_objects
        self.reverse_prob = reverse_prob
        self._open: OrderedDict[str, VideoReader] = OrderedDict()
        self._limit = max(open_videos, 1)

    def _reader(self, uri: str) -> VideoReader:
        reader = self._open.pop(uri, None)
        if reader is None:
            reader = open_video(uri, self.storage_options)
        self._open[uri] = reader
        while len(self._open) > self._limit:
            self._open.popitem(last=False)[1].close()
        return reader

    def sample(self, rng: np.random.Generator, clip_len: int) -> Clip:
        for _ in range(100):
            video = self.videos[int(rng.integers(len(self.videos)))]
            choice = choose_clip(
                video.areas, rng, clip_len, self.min_area, self.max_objects, self.reverse_prob
            )
            if choice is None:
                continue
            ascending = np.sort(choice.order)
            reader = video.frames(self._reader(video.frames_uri))
            frames = np.stack([reader[int(t)] for t in ascending])
            masks = video.masks(choice.objects, ascending)
            if choice.order[0] > choice.order[-1]:
                frames, masks = frames[::-1], masks[:, ::-1]
            return Clip(
                np.ascontiguousarray(frames),
                np.ascontiguousarray(masks),
                source=f"{video.video_id} frames {ascending[0]}-{ascending[-1]}",
            )
        raise ValueError(
            f"no training video has a {clip_len}-frame clip with an object of >= {self.min_area} pixels "
            f"on its first frame (videos: {', '.join(v.video_id for v in self.videos[:5])})"
        )

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()
