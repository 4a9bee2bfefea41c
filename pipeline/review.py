"""Where a reviewer should look first: a run's (video, object, frames) ranked by doubt.

Four signals from the mask table alone, each a row of ``review.parquet``:

- ``low-score``: a run of frames where the object is shown but its predicted IoU
  (``score``) is under 0.5; doubt = 1 - the lowest score.
- ``score-drop``: predicted IoU falls by 0.25 or more from one frame to the next;
  doubt = the fall.
- ``area-jump``: the mask's area changes by 2x or more between neighbouring
  frames; doubt = 1 - smaller / larger area.
- ``vanish-return``: the object disappears (``present`` false or an empty mask)
  and comes back; doubt = 0.5 + 0.4 / gap length, so a one-frame flicker (0.9)
  ranks above a long occlusion, which is often real.

Rows are sorted by doubt (highest first), then video, object, frame. The run
is read one video at a time (``RunReader``).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.exports import RunReader
from pipeline.storage import url_to_fs

LOW_SCORE = 0.5
SCORE_DROP = 0.25
AREA_RATIO = 0.5
REVIEW_FILE = "review.parquet"

REVIEW_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("object_id", pa.int64(), nullable=False),
        pa.field("first_frame", pa.int64(), nullable=False),
        pa.field("last_frame", pa.int64(), nullable=False),
        pa.field("signal", pa.string(), nullable=False),
        pa.field("doubt", pa.float64(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Doubt:
    """One place to look: an object's frames first..last (inclusive) and why."""

    video_id: str
    object_id: int
    first_frame: int
    last_frame: int
    signal: str
    doubt: float
    detail: str


def object_doubts(
    video_id: str,
    object_id: int,
    frames: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    shown: np.ndarray,
) -> list[Doubt]:
    """The doubts of one object's rows (sorted by frame): N frame indices, N scores (NaN
    where unknown), N areas and N booleans (the mask is shown on that frame)."""
    out: list[Doubt] = []

    def add(first: int, last: int, signal: str, doubt: float, detail: str) -> None:
        out.append(
            Doubt(video_id, object_id, int(frames[first]), int(frames[last]), signal, doubt, detail)
        )

    low = shown & (scores < LOW_SCORE)
    for first, last in _runs(low):
        worst = float(np.min(scores[first : last + 1]))
        add(first, last, "low-score", 1.0 - worst, f"predicted IoU down to {worst:.2f}")
    for t in range(1, len(frames)):
        if not (shown[t - 1] and shown[t]):
            continue
        fall = float(scores[t - 1] - scores[t])
        if fall >= SCORE_DROP:
            add(t, t, "score-drop", fall, f"predicted IoU {scores[t - 1]:.2f} -> {scores[t]:.2f}")
        small, large = sorted((int(areas[t - 1]), int(areas[t])))
        if small < AREA_RATIO * large:
            add(
                t,
                t,
                "area-jump",
                1.0 - small / large,
                f"area {int(areas[t - 1])} -> {int(areas[t])} px",
            )
    seen = np.flatnonzero(shown)
    if len(seen):
        for first, last in _runs(~shown[seen[0] : seen[-1] + 1]):
            gap = last - first + 1
            first, last = first + seen[0], last + seen[0]
            add(first, last, "vanish-return", 0.5 + 0.4 / gap, f"gone for {gap} frame(s)")
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in a bool array."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def rank_run(run_uri: str, storage_options: dict | None = None) -> pa.Table:
    """Every doubt of the run's committed masks as a REVIEW_SCHEMA table, most doubtful first."""
    reader = RunReader(run_uri, storage_options)
    doubts: list[Doubt] = []
    for video in reader.videos():
        for object_id, track in video.by_object():
            scores = track.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
            areas = track.column("area").to_numpy()
            present = track.column("present").to_pylist()
            shown = np.array([p is not False and a > 0 for p, a in zip(present, areas)])
            frames = track.column("frame_index").to_numpy()
            doubts.extend(object_doubts(video.video_id, object_id, frames, scores, areas, shown))
    doubts.sort(key=lambda d: (-d.doubt, d.video_id, d.object_id, d.first_frame, d.signal))
    return pa.Table.from_pylist([asdict(d) for d in doubts], schema=REVIEW_SCHEMA)


def write_review(table: pa.Table, uri: str, storage_options: dict | None = None) -> str:
    """Write the ranking as one Parquet file (whole, in one upload); returns ``uri``."""
    fs, path = url_to_fs(uri, storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs.pipe_file(path, buffer.getvalue())
    return uri


def format_rows(table: pa.Table, top: int = 10) -> str:
    """The first ``top`` rows as aligned text, for a terminal."""
    lines = [f"{'doubt':>6}  {'video':<20} {'object':>6}  {'frames':<11} {'signal':<14} detail"]
    for row in table.slice(0, top).to_pylist():
        frames = f"{row['first_frame']}-{row['last_frame']}"
        lines.append(
            f"{row['doubt']:6.2f}  {row['video_id']:<20} {row['object_id']:>6}  {frames:<11} "
            f"{row['signal']:<14} {row['detail']}"
        )
    return "\n".join(lines)
