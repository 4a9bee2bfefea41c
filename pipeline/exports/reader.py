"""Streaming reader of a run's committed mask rows, one video at a time.

An export never loads the whole mask table: the reader first indexes which
committed data files hold which videos (reading only the ``video_id`` column,
batch by batch), then hands out one video's rows at a time, read in pyarrow
batches from just those files. Peak memory is one video's rows (RLE text,
a few hundred bytes a row) plus one batch. Per-frame formats (DAVIS, YOLO,
Label Studio) need every object of a frame together, and a unit's rows are
sorted by (object, frame), so a video is the natural unit of grouping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from pipeline.masks import MASK_SCHEMA, with_origin_columns
from pipeline.sink import COMMITS_DIR, OutputStore, arrow_filesystem

DEFAULT_BATCH_ROWS = 4096


class RunNotFoundError(FileNotFoundError):
    """The folder holds no committed units (not a label run's output, or nothing finished yet)."""


@dataclass(frozen=True)
class VideoRows:
    """One video's mask rows, sorted by (object_id, frame_index); every row has this size."""

    video_id: str
    height: int
    width: int
    table: pa.Table

    @property
    def frame_count(self) -> int:
        """Frames 0 .. last labeled frame (formats that index frames need the full range)."""
        return (
            int(pc.max(self.table.column("frame_index")).as_py()) + 1 if self.table.num_rows else 0
        )

    def object_ids(self) -> list[int]:
        return sorted(int(v) for v in pc.unique(self.table.column("object_id")).to_pylist())

    def by_frame(self) -> Iterator[tuple[int, pa.Table]]:
        """(frame_index, that frame's rows sorted by object_id) for every frame with rows."""
        table = self.table.sort_by([("frame_index", "ascending"), ("object_id", "ascending")])
        frames = table.column("frame_index").to_numpy()
        starts = np.flatnonzero(np.diff(frames, prepend=frames[:1] - 1))
        ends = np.append(starts[1:], len(frames))
        for start, end in zip(starts, ends):
            yield int(frames[start]), table.slice(int(start), int(end - start))

    def by_object(self) -> Iterator[tuple[int, pa.Table]]:
        """(object_id, that object's rows sorted by frame_index) for every object."""
        objects = self.table.column("object_id").to_numpy()
        starts = np.flatnonzero(np.diff(objects, prepend=objects[:1] - 1))
        ends = np.append(starts[1:], len(objects))
        for start, end in zip(starts, ends):
            yield int(objects[start]), self.table.slice(int(start), int(end - start))


def visible(present: bool | None, area: int) -> bool:
    """Whether a row's mask is exported as drawn: rows the model judged absent
    (``present`` false) count as empty, as in ``jobs evaluate``; a null ``present``
    (tables from elsewhere) trusts the mask."""
    return present is not False and area > 0


def _arrow_filesystem(store: OutputStore) -> pafs.FileSystem:
    """pyarrow's own filesystem where sink has one (local, S3: no Python in its I/O
    threads), else fsspec's through PyFileSystem (memory://, other stores)."""
    native = arrow_filesystem(store.fs, store.storage_options)
    return native if native is not None else pafs.PyFileSystem(pafs.FSSpecHandler(store.fs))


class RunReader:
    """Committed mask rows of one run folder, read video by video in batches."""

    def __init__(
        self,
        run_uri: str,
        storage_options: dict | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ):
        store = OutputStore(run_uri, storage_options)
        units = sorted(store.committed_units())
        if not units:
            raise RunNotFoundError(
                f"{run_uri}: no committed units (no commit records under "
                f"{run_uri.rstrip('/')}/{COMMITS_DIR}/); expected the --output folder of a "
                "finished or partly finished `python -m jobs label` run"
            )
        self.run_uri = run_uri
        self.batch_size = batch_size
        self._filesystem = _arrow_filesystem(store)
        self._paths = [store.data_path(unit) for unit in units]
        self._files_of_video: dict[str, list[str]] | None = None

    def _dataset(self, paths: list[str]) -> pads.Dataset:
        return pads.dataset(
            paths, schema=MASK_SCHEMA, format="parquet", filesystem=self._filesystem
        )

    def _index(self) -> dict[str, list[str]]:
        if self._files_of_video is None:
            index: dict[str, list[str]] = {}
            for fragment in self._dataset(self._paths).get_fragments():
                seen: set[str] = set()
                for batch in fragment.to_batches(columns=["video_id"], batch_size=self.batch_size):
                    seen.update(pc.unique(batch.column(0)).to_pylist())
                for video_id in seen:
                    index.setdefault(video_id, []).append(fragment.path)
            self._files_of_video = index
        return self._files_of_video

    def video_ids(self) -> list[str]:
        return sorted(self._index())

    def object_ids(self) -> list[int]:
        """Every object id of the run (reads only the object_id column)."""
        seen: set[int] = set()
        for batch in self._dataset(self._paths).to_batches(
            columns=["object_id"], batch_size=self.batch_size
        ):
            seen.update(pc.unique(batch.column(0)).to_pylist())
        return sorted(seen)

    def categories(self) -> list[str]:
        """Every object category of the run, sorted (reads only the category column; units
        written before it existed have none)."""
        seen: set[str] = set()
        for batch in self._dataset(self._paths).to_batches(
            columns=["category"], batch_size=self.batch_size
        ):
            seen.update(v for v in pc.unique(batch.column(0)).to_pylist() if v is not None)
        return sorted(seen)

    def video(self, video_id: str) -> VideoRows:
        """One video's rows (only the files that hold it are read, in batches)."""
        paths = self._index().get(video_id)
        if not paths:
            raise KeyError(f"{self.run_uri}: no committed rows for video {video_id!r}")
        batches = self._dataset(paths).to_batches(
            filter=pc.field("video_id") == video_id, batch_size=self.batch_size
        )
        table = with_origin_columns(pa.Table.from_batches(list(batches), schema=MASK_SCHEMA))
        table = table.sort_by([("object_id", "ascending"), ("frame_index", "ascending")])
        heights = pc.unique(table.column("height")).to_pylist()
        widths = pc.unique(table.column("width")).to_pylist()
        if len(heights) != 1 or len(widths) != 1:
            raise ValueError(
                f"{self.run_uri}: video {video_id!r} has rows of different frame sizes "
                f"(heights {heights}, widths {widths})"
            )
        height, width = int(heights[0]), int(widths[0])
        return VideoRows(video_id, height, width, table)

    def videos(self) -> Iterator[VideoRows]:
        """Every video's rows, one video at a time, in video_id order."""
        for video_id in self.video_ids():
            yield self.video(video_id)
