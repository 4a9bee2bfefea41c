"""Typed records of a labeling run: what a worker returns for a unit, a unit that failed for
good, and the run's summary. Each has one fixed Arrow schema or JSON form, so the coordinator,
the sink and the CLI read fields, never dict keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker actually runs its model, read from the model and tracker options it built
    (not echoed from the request): what ``summary.json`` reports under ``worker_settings``."""

    devices: tuple[str, ...] = ("cpu",)
    image_size: int = 0
    compiled: bool = False
    autocast_dtype: str | None = None
    memory_dtype: str = "float32"
    storage_device: str | None = None
    memory_fraction: float | None = None
    streams: bool = False
    tf32: bool = False
    detector: str | None = None  # the detector loaded for videos without objects, if any

    @classmethod
    def from_dict(cls, raw: dict) -> WorkerSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["devices"] = tuple(values.get("devices") or ("cpu",))
        return cls(**values)


@dataclass(frozen=True)
class ObjectChunks:
    """How a unit's objects were split into chunks on the device, from its tracking session
    (``sam2_core.tracker_records.TrackerStats``): ``largest`` / ``smallest`` the largest and
    smallest chunk a frame was tried with, ``max_per_frame`` the most chunks of one frame,
    ``oom_retries`` frames redone after running out of device memory and ``oom_chunks`` the
    smaller chunk each of those took, in order."""

    largest: int = 0
    smallest: int = 0
    max_per_frame: int = 0
    oom_retries: int = 0
    oom_chunks: tuple[int, ...] = ()

    @classmethod
    def of(cls, stats) -> ObjectChunks:
        """From a session's ``TrackerStats``."""
        return cls(
            largest=stats.largest_chunk,
            smallest=stats.smallest_chunk,
            max_per_frame=stats.max_chunks_per_frame,
            oom_retries=stats.oom_retries,
            oom_chunks=tuple(stats.oom_chunks),
        )


@dataclass(frozen=True)
class UnitResult:
    """A committed unit: counts and timings (seconds) reported by the worker that wrote it.

    Stages (see :class:`UnitSeconds`): ``track_s`` the tracker's own time on the unit's thread,
    ``decode_s`` reading frames (on a prefetch thread when the tracker prefetches),
    ``transfer_s`` thresholding masks and moving them to the host, ``encode_s`` RLE encoding on
    the encoder threads (overlapped with tracking), ``encode_wait_s`` tracking held up by them,
    ``write_s`` writing and committing the unit's Parquet file; for a unit without prompts,
    ``discover_s`` finding its objects (pass 1) and ``propose_s`` the part of it spent on
    proposals (automatic masks or the detector), ``track_s`` then being pass 2 alone.
    ``encoder_images`` / ``encoder_batches`` are the worker's running totals of its shared image
    encoder (several units at once per worker), 0 when it has none. ``chunks``: how its
    objects were split on the device (None for images, which are not tracked).
    """

    unit_id: str
    video: str
    video_identity: str
    video_id: str
    object_ids: tuple[int, ...]
    run_id: str
    model: str
    attempt: int
    frames: int
    rows: int
    objects: int
    path: str
    node_id: str | None = None
    pid: int | None = None
    track_s: float = 0.0
    decode_s: float = 0.0
    transfer_s: float = 0.0
    encode_s: float = 0.0
    encode_wait_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0
    discover_s: float = 0.0
    propose_s: float = 0.0
    encoder_images: int = 0
    encoder_batches: int = 0
    settings: WorkerSettings | None = None
    chunks: ObjectChunks | None = None

    def commit_metadata(self) -> dict:
        """The part of the result stored in the unit's commit record."""
        keep = ("unit_id", "video", "video_identity", "video_id", "run_id", "model", "attempt")
        record = {name: getattr(self, name) for name in keep}
        record["object_ids"] = list(self.object_ids)
        record.update(frames=self.frames, rows=self.rows, node_id=self.node_id, pid=self.pid)
        return record


FAILURE_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("video", pa.string()),
        ("video_id", pa.string()),
        ("object_ids", pa.list_(pa.int64())),
        ("location", pa.string()),
        ("attempts", pa.int64()),
        ("error_type", pa.string()),
        ("transient", pa.bool_()),
        ("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class UnitFailure:
    """A unit that failed for good: after ``attempts`` attempts, with its last error.

    ``transient`` says whether that error was of a kind worth retrying (the unit ran out of
    attempts) or permanent (bad input, a bug); a later run retries it either way.
    """

    unit_id: str
    video: str
    video_id: str
    object_ids: tuple[int, ...]
    location: str
    attempts: int
    error_type: str
    transient: bool
    reason: str


def failure_from_row(row: dict) -> UnitFailure:
    """A row of ``failures/`` back as a record; columns that files written by earlier versions
    lack take empty values, and ``object_ids`` stored as JSON text is parsed."""
    object_ids = row.get("object_ids") or ()
    if isinstance(object_ids, str):
        object_ids = json.loads(object_ids)
    return UnitFailure(
        unit_id=str(row.get("unit_id") or ""),
        video=str(row.get("video") or ""),
        video_id=str(row.get("video_id") or ""),
        object_ids=tuple(int(o) for o in object_ids),
        location=str(row.get("location") or ""),
        attempts=int(row.get("attempts") or 0),
        error_type=str(row.get("error_type") or ""),
        transient=bool(row.get("transient")),
        reason=str(row.get("reason") or ""),
    )


def failures_table(failures: list[UnitFailure]) -> pa.Table:
    """``failures/`` as a table of :data:`FAILURE_SCHEMA` (empty when none failed)."""
    rows = [{**asdict(f), "object_ids": list(f.object_ids)} for f in failures]
    return pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA)


@dataclass
class UnitSeconds:
    """Seconds per stage summed over the run's committed units, to show what bounds a run.

    total: each unit's wall time in its worker. track: the tracker (model and memory) on the
    unit's thread; it includes decoding of frames not prefetched. decode: reading and decoding
    frames (overlapping tracking when prefetched). transfer: thresholding masks where they were
    computed and copying them to the host (on CUDA the copy is asynchronous and finishes on the
    encoder threads). encode: RLE encoding on the encoder threads, overlapped with tracking.
    encode_wait: tracking held up waiting for those threads (their queue is bounded; large when
    encoding bounds the run). write: writing and committing each unit's Parquet file.
    discover: units without prompts finding their objects (pass 1: proposals on keyframes and
    tracking between them; their ``track`` is pass 2); propose: the part of ``discover`` spent
    making proposals (automatic masks or the detector).
    """

    total: float = 0.0
    track: float = 0.0
    decode: float = 0.0
    transfer: float = 0.0
    encode: float = 0.0
    encode_wait: float = 0.0
    write: float = 0.0
    discover: float = 0.0
    propose: float = 0.0

    @classmethod
    def of(cls, results: list[UnitResult]) -> UnitSeconds:
        return cls(
            **{
                f.name: round(sum(getattr(r, f"{f.name}_s") for r in results), 3)
                for f in fields(cls)
            }
        )

    @classmethod
    def from_dict(cls, raw: dict) -> UnitSeconds:
        """Read back; ``commit`` (written by earlier versions) is ``write``."""
        raw = dict(raw)
        if "commit" in raw:
            raw.setdefault("write", raw.pop("commit"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class OomRetries:
    """A unit that ran out of device memory: ``retries`` frames redone, each with the smaller
    object chunk in ``chunks`` (in order)."""

    unit_id: str
    retries: int
    chunks: list[int]


@dataclass
class ChunkSummary:
    """The run's object chunks (``summary.json`` ``object_chunks``): the largest and smallest
    chunk any unit's frame was tried with (None when no video was tracked), the most chunks of
    one frame, the out-of-memory retries in all and the units that made them."""

    largest: int | None = None
    smallest: int | None = None
    max_per_frame: int = 0
    oom_retries: int = 0
    units_after_oom: list[OomRetries] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[UnitResult]) -> ChunkSummary:
        chunks = [(r.unit_id, r.chunks) for r in results if r.chunks and r.chunks.largest]
        if not chunks:
            return cls()
        return cls(
            largest=max(c.largest for _, c in chunks),
            smallest=min(c.smallest for _, c in chunks),
            max_per_frame=max(c.max_per_frame for _, c in chunks),
            oom_retries=sum(c.oom_retries for _, c in chunks),
            units_after_oom=[
                OomRetries(unit_id, c.oom_retries, list(c.oom_chunks))
                for unit_id, c in sorted(chunks)
                if c.oom_retries
            ],
        )

    @classmethod
    def from_dict(cls, raw: dict) -> ChunkSummary:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["units_after_oom"] = [OomRetries(**u) for u in values.get("units_after_oom") or []]
        return cls(**values)


@dataclass
class RunSummary:
    """``summary.json``: what a run was asked, what it did, how it ended.

    status: "ok", "partial" (failures or rejects), "rejected" (``--strict`` with rejects),
    "interrupted" (Ctrl-C) or "fatal" (the run could not go on; ``error`` says why).
    ``worker_settings``: each distinct way the run's workers ran the model, as they reported it.
    ``object_chunks``: how the workers split objects into chunks on the device, and which units
    ran out of device memory and were redone with smaller chunks.
    """

    run_id: str
    manifest: str
    output: str
    model: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    started_at: str
    videos: int = 0
    units: int = 0
    units_done: int = 0
    skipped: int = 0
    failed: int = 0
    rejected: int = 0
    retries: int = 0
    frames: int = 0
    rows: int = 0
    workers: int = 1
    status: str = "running"
    interrupted: bool = False
    note: str | None = None
    error: str | None = None
    finished_at: str | None = None
    wall_time_s: float = 0.0
    frames_per_s: float = 0.0
    unit_seconds: UnitSeconds = field(default_factory=UnitSeconds)
    frames_per_encoder_batch: float | None = None
    worker_settings: list[WorkerSettings] = field(default_factory=list)
    object_chunks: ChunkSummary = field(default_factory=ChunkSummary)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> RunSummary:
        """A summary read back; unknown keys (written by a newer version) are ignored."""
        raw = json.loads(data)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["unit_seconds"] = UnitSeconds.from_dict(values.get("unit_seconds") or {})
        values["worker_settings"] = [
            WorkerSettings.from_dict(s) for s in values.get("worker_settings") or []
        ]
        values["object_chunks"] = ChunkSummary.from_dict(values.get("object_chunks") or {})
        return cls(**values)
