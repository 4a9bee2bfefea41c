"""Label one video (or a unit of it) in a single process: frames in, mask table out.

This is the whole per-unit computation -- turn manifest prompts into the
tracker's :class:`~sam2_core.prompts.ObjectPrompt`, track every object over
every frame, encode each mask as COCO RLE -- with no Ray in it. Ray workers call it, and tests call it directly to get the
reference table a distributed run must reproduce row for row.

The output path keeps the device busy: each frame's masks are thresholded where the tracker
computed them and only booleans and per-object scalars go to the host (pinned, asynchronous
on CUDA); RLE encoding runs on a small thread pool while the tracking thread goes on to the
next frame, with at most a few frames waiting so host memory stays bounded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.errors import InputError
from pipeline.manifest import ObjectSpec, VideoJob, fit_prompt_to_frame
from pipeline.masks import MASK_SCHEMA, MaskRow, ObjectOrigin, decode_mask, mask_row, mask_table
from pipeline.storage import safe_uri
from pipeline.video import open_video
from sam2_core.frames import FrameSource
from sam2_core.prompts import ObjectPrompt, PromptError

if TYPE_CHECKING:
    from sam2_core.tracker_records import TrackerStats

SORT_KEYS = [("object_id", "ascending"), ("frame_index", "ascending")]

ENCODE_THREADS = 2
"""Threads encoding masks to RLE beside the tracking thread; at most twice as many frames wait."""


@dataclass(frozen=True)
class LabelStats:
    """What one labeling pass did, for progress and the run summary (seconds per stage, as
    :class:`pipeline.records.UnitSeconds` describes them)."""

    frames: int
    rows: int
    objects: int
    height: int
    width: int
    wall_s: float
    decode_s: float = 0.0
    track_s: float = 0.0
    transfer_s: float = 0.0
    encode_s: float = 0.0
    encode_wait_s: float = 0.0
    discover_s: float = 0.0
    propose_s: float = 0.0
    tracker: TrackerStats | None = None  # the tracking session's (None: no video tracked)


@dataclass
class _HostFrame:
    """One frame's outputs on their way to the host: masks N x H x W bool, object-score
    logits N float32 (> 0: present), scores N float32; ``ready`` is the CUDA event after which
    the copies are complete."""

    frame_index: int
    object_ids: list[int]
    masks: object
    logits: object
    scores: object
    prompted: list[bool]
    ready: object = None


def _to_host(result) -> _HostFrame:
    """Threshold a FrameResult where the tracker left it and start copying only what the rows
    need to the host (pinned memory and non-blocking on CUDA; the encoder thread waits)."""
    import torch

    tensors = [
        result.video_logits() > 0,  # thresholded on the device: 1 byte a pixel comes back
        result.object_score_logits.detach().reshape(-1).float(),
        result.ious.detach().reshape(-1).float(),
    ]
    ready = None
    on_device = [t for t in tensors if t.is_cuda]
    if on_device:
        tensors = [
            torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
            if t.is_cuda
            else t
            for t in tensors
        ]
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(on_device[0].device))
    masks, logits, scores = tensors
    return _HostFrame(
        result.frame_index,
        list(result.object_ids),
        masks,
        logits,
        scores,
        list(result.prompted),
        ready,
    )


def _encode_rows(
    frame: _HostFrame,
    video_id: str,
    run_id: str,
    model_name: str,
    given: dict[int, np.ndarray],
    origins: Mapping[int, ObjectOrigin],
) -> tuple[list[MaskRow], float]:
    """One frame's mask rows (RLE encoded), on an encoder thread; returns them with the seconds
    it took. ``given``: object id -> the mask a mask prompt gives it on this frame, written as
    drawn (the model sees it through its low-resolution input, which would move edge pixels);
    ``origins``: object id -> its origin (missing: prompted)."""
    started = time.perf_counter()
    if frame.ready is not None:
        frame.ready.synchronize()
    masks, logits, scores = frame.masks.numpy(), frame.logits.numpy(), frame.scores.numpy()
    rows = [
        mask_row(
            video_id,
            oid,
            frame.frame_index,
            given[oid] if oid in given else masks[i],
            score=scores[i],
            present=bool(given[oid].any()) if oid in given else logits[i] > 0,
            prompted=frame.prompted[i],
            run_id=run_id,
            model=model_name,
            object_score_logit=logits[i],
            origin=origins.get(oid, _PROMPTED),
        )
        for i, oid in enumerate(frame.object_ids)
    ]
    return rows, time.perf_counter() - started


_PROMPTED = ObjectOrigin()


class _TimedFrames:
    """A FrameSource that adds up the time spent reading frames."""

    def __init__(self, frames: FrameSource):
        self._frames = frames
        self.height, self.width = frames.height, frames.width
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._frames[index]
        finally:
            self.seconds += time.perf_counter() - started


def to_object_prompts(
    objects: Sequence[ObjectSpec], frames: FrameSource, location: str = ""
) -> list[ObjectPrompt]:
    """Manifest prompts -> the tracker's ObjectPrompt, checked against the video.

    Raises InputError naming the manifest location, the object and the value for a
    prompt past the video's end, a mask of the wrong size, or a point or box outside
    the frame (partly-outside boxes are clipped to the frame). Everything else about a
    prompt the manifest already checked by the same rules ObjectPrompt applies.
    """
    where = f"{location}: " if location else ""
    n, h, w = len(frames), frames.height, frames.width
    out = []
    for obj in objects:
        if not obj.prompts:
            raise InputError(f"{where}object {obj.object_id} has no prompts")
        for index, p in enumerate(obj.prompts):
            where_prompt = f"{where}object {obj.object_id} prompts[{index}] (frame {p.frame})"
            if not 0 <= p.frame < n:
                raise InputError(
                    f"{where}object {obj.object_id}: prompt frame {p.frame} is past the end of "
                    f"the video ({n} frames, last index {n - 1})"
                )
            try:
                p = fit_prompt_to_frame(p, h, w)
            except ValueError as error:
                raise InputError(f"{where_prompt}: {error}") from None
            mask = None
            if p.mask_rle is not None:
                size = list(p.mask_rle.get("size", []))
                if size != [h, w]:
                    raise InputError(
                        f"{where}object {obj.object_id} frame {p.frame}: mask size {size} does not "
                        f"match the video ({h} x {w})"
                    )
                mask = decode_mask(p.mask_rle["counts"], h, w)
            try:
                prompt = ObjectPrompt(obj.object_id, p.frame, p.points, p.labels, p.box, mask)
            except PromptError as error:  # a Prompt made in code, not read from a manifest
                raise InputError(f"{where_prompt}: {error}") from None
            out.append(prompt)
    return out


def _require_tracking(model, where: str) -> None:
    """Refuse a model that cannot track a video (SAM 1: no memory), naming the video."""
    if not hasattr(model, "memory_attention"):
        raise InputError(
            f"{where}: {type(model).__name__} segments images only; label videos with a SAM 2 model"
        )


def label_frames(
    model,
    frames: FrameSource,
    objects: Sequence[ObjectSpec],
    *,
    video_id: str,
    run_id: str,
    model_name: str,
    location: str = "",
    tracker_options=None,
    on_frame: Callable[[int, int], None] | None = None,
    encoder=None,
    encode_threads: int = ENCODE_THREADS,
) -> tuple[pa.Table, LabelStats]:
    """Track `objects` through `frames`; one MASK_SCHEMA row per (object, frame).

    Rows come sorted by (object_id, frame_index) whatever order the tracker
    yields frames in, so tables are comparable row for row. ``on_frame(done,
    total)`` is called after each tracked frame (progress, test fault hooks).
    ``encoder``: a SharedEncoder when several videos are labeled at once on one model.
    ``encode_threads``: threads encoding RLE while this thread tracks (see the module docstring).
    """
    started = time.perf_counter()
    frames = _TimedFrames(frames)
    prompts = to_object_prompts(objects, frames, location)
    _require_tracking(model, location)
    origins = {o.object_id: ObjectOrigin(category=o.category) for o in objects if o.category}
    return label_prompts(
        model,
        frames,
        prompts,
        video_id=video_id,
        run_id=run_id,
        model_name=model_name,
        tracker_options=tracker_options,
        on_frame=on_frame,
        encoder=encoder,
        encode_threads=encode_threads,
        origins=origins,
        started=started,
    )


def label_prompts(
    model,
    frames: FrameSource,
    prompts: Sequence[ObjectPrompt],
    *,
    video_id: str,
    run_id: str,
    model_name: str,
    tracker_options=None,
    on_frame: Callable[[int, int], None] | None = None,
    encoder=None,
    encode_threads: int = ENCODE_THREADS,
    prompted: bool = True,
    origins: Mapping[int, ObjectOrigin] | None = None,
    started: float | None = None,
) -> tuple[pa.Table, LabelStats]:
    """:func:`label_frames` from the tracker's prompts (checked against the video already).
    ``prompted`` False: no row is marked prompted (objects found by the labeler, not a
    person); ``origins``: object id -> where it came from, written on each of its rows
    (objects not in it: ``ObjectOrigin()``, prompted, no category); ``started``: when the
    unit's work began, for ``wall_s``."""
    import torch

    from sam2_core.tracker import VideoSession, track_session

    started = time.perf_counter() if started is None else started
    origins = dict(origins or {})
    if not isinstance(frames, _TimedFrames):
        frames = _TimedFrames(frames)
    drawn: dict[int, dict[int, np.ndarray]] = {}  # frame -> object id -> mask prompt
    for prompt in prompts:
        if prompt.mask is not None:
            drawn.setdefault(prompt.frame, {})[prompt.object_id] = prompt.mask
    n_frames, h, w = len(frames), frames.height, frames.width
    rows: list[MaskRow] = []
    done = 0
    track_s = transfer_s = encode_s = wait_s = 0.0
    pending: deque[Future] = deque()
    max_pending = 2 * max(1, encode_threads)

    def collect() -> None:
        nonlocal encode_s, wait_s
        waited = time.perf_counter()
        frame_rows, seconds = pending.popleft().result()
        wait_s += time.perf_counter() - waited
        rows.extend(frame_rows)
        encode_s += seconds

    pool = ThreadPoolExecutor(max(1, encode_threads), thread_name_prefix="rle-encode")
    results = None
    try:
        with torch.inference_mode():
            session = VideoSession(model, frames, tracker_options, encoder)
            results = track_session(session, prompts)
            while True:
                step = time.perf_counter()
                result = next(results, None)
                track_s += time.perf_counter() - step
                if result is None:
                    break
                step = time.perf_counter()
                host = _to_host(result)
                transfer_s += time.perf_counter() - step
                given = drawn.get(host.frame_index, {})
                if not prompted:
                    host.prompted = [False] * len(host.prompted)
                pending.append(
                    pool.submit(_encode_rows, host, video_id, run_id, model_name, given, origins)
                )
                while len(pending) > max_pending:
                    collect()
                done += 1
                if on_frame is not None:
                    on_frame(done, n_frames)
        while pending:
            collect()
    finally:
        getattr(results, "close", lambda: None)()  # a generator stopped early: its reader too
        pool.shutdown(wait=True, cancel_futures=True)
    table = mask_table(rows).sort_by(SORT_KEYS)
    n_objects = len({p.object_id for p in prompts})
    expected = n_frames * n_objects
    keys = {(row.object_id, row.frame_index) for row in rows}
    if table.num_rows != expected or len(keys) != expected:
        raise RuntimeError(
            f"tracker returned {table.num_rows} rows ({len(keys)} distinct) for {n_objects} "
            f"objects x {n_frames} frames of {video_id!r}; expected exactly {expected}"
        )
    stats = LabelStats(
        frames=n_frames,
        rows=table.num_rows,
        objects=n_objects,
        height=h,
        width=w,
        wall_s=time.perf_counter() - started,
        decode_s=frames.seconds,
        track_s=track_s,
        transfer_s=transfer_s,
        encode_s=encode_s,
        encode_wait_s=wait_s,
        tracker=session.stats,
    )
    return table, stats


def label_video(
    model,
    job: VideoJob,
    *,
    run_id: str,
    model_name: str,
    object_ids: Sequence[int] | None = None,
    storage_options: dict | None = None,
    tracker_options=None,
    on_frame: Callable[[int, int], None] | None = None,
    encoder=None,
    detector=None,
) -> tuple[pa.Table, LabelStats]:
    """Open `job.video`, label its objects (or only `object_ids`), close it. A job without
    objects gets every object found (:func:`pipeline.masklets.label_masklets`; ``detector``:
    the loaded detector of ``job.detector``, loaded there when None)."""
    if not job.objects:  # no prompts: find every object
        from pipeline.masklets import label_masklets

        _require_tracking(model, f"{job.location} ({safe_uri(job.video)})")

        return label_masklets(
            model,
            job,
            run_id=run_id,
            model_name=model_name,
            storage_options=storage_options,
            tracker_options=tracker_options,
            on_frame=on_frame,
            encoder=encoder,
            detector=detector,
        )
    objects = job.objects
    if object_ids is not None:
        wanted = set(object_ids)
        objects = tuple(o for o in job.objects if o.object_id in wanted)
    with open_video(job.video, storage_options=storage_options) as frames:
        return label_frames(
            model,
            frames,
            objects,
            video_id=job.video_id,
            run_id=run_id,
            model_name=model_name,
            location=f"{job.location} ({safe_uri(job.video)})",
            tracker_options=tracker_options,
            on_frame=on_frame,
            encoder=encoder,
        )


def label_jobs(
    model,
    jobs: Sequence[VideoJob],
    *,
    run_id: str,
    model_name: str,
    storage_options: dict | None = None,
    tracker_options=None,
) -> pa.Table:
    """Every job labeled one after another in this process, concatenated and sorted by
    (video_id, object_id, frame_index): the single-process reference for a run."""
    tables = [
        label_video(
            model,
            job,
            run_id=run_id,
            model_name=model_name,
            storage_options=storage_options,
            tracker_options=tracker_options,
        )[0]
        for job in jobs
    ]
    if not tables:
        return MASK_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by([("video_id", "ascending"), *SORT_KEYS])
