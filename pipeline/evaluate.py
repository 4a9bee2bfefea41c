"""J&F scores of predicted mask tables against ground truth, as in DAVIS 2017 and SA-V.

Per frame and object, J (region similarity) and F (boundary accuracy) are
:mod:`pipeline.jf_metrics`'s (DAVIS conventions, described there).

An object's J and F are means over its evaluated frames; J&F = (J + F) / 2.
The overall score is the mean over all objects of all videos (the "global
score" of the DAVIS and SA-V tools); the mean over videos of each video's
object mean is reported as well.

Which frames count (``skip``): the ground truth's frames for the object,

- ``"first-last"`` (default): without the first and the last, as DAVIS 2017
  semi-supervised and SA-V's official benchmark (``skip_first_and_last``) do;
- ``"first-prompted"``: without the object's first prompted frame (the
  earliest prediction row with ``prompted`` true; if no row is marked, the
  first frame where the ground truth shows the object);
- ``"none"``: every frame.

A ground-truth frame without a prediction row counts as an empty prediction
(and is counted in ``missing_frames``); prediction rows with ``present`` false
count as empty masks unless ``absent_as_empty=False``.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.jf_metrics import DEFAULT_BOUND_TH as DEFAULT_BOUND_TH  # re-exported
from pipeline.jf_metrics import boundary_f_measure as boundary_f_measure
from pipeline.jf_metrics import boundary_map as boundary_map
from pipeline.jf_metrics import boundary_tolerance as boundary_tolerance
from pipeline.jf_metrics import dilate_disk as dilate_disk
from pipeline.jf_metrics import region_similarity as region_similarity
from pipeline.masks import MASK_SCHEMA, masks_from_table
from pipeline.storage import url_to_fs

SKIP_MODES = ("first-last", "first-prompted", "none")

_REQUIRED_COLUMNS = ("video_id", "object_id", "frame_index", "height", "width", "rle")


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class ObjectScore:
    """Scores of one object in one video (means over its evaluated frames, in [0, 1])."""

    video_id: str
    object_id: int
    j: float
    f: float
    jf: float
    frames: int  # frames evaluated
    missing_frames: int  # evaluated frames with no prediction row


@dataclass(frozen=True)
class VideoScore:
    """A video's scores: means over its objects."""

    video_id: str
    j: float
    f: float
    jf: float
    objects: int


@dataclass
class EvalReport:
    """Per-object, per-video and overall J, F and J&F (fractions in [0, 1])."""

    objects: list[ObjectScore]
    videos: list[VideoScore]
    j: float  # mean over all objects (DAVIS / SA-V global score)
    f: float
    jf: float
    video_mean_j: float  # mean over videos of each video's object mean
    video_mean_f: float
    video_mean_jf: float
    skip: str
    bound_th: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN becomes None)."""
        by_video: dict[str, list[dict]] = {}
        for score in self.objects:
            row = asdict(score)
            row.pop("video_id")
            by_video.setdefault(score.video_id, []).append(_clean(row))
        return {
            "overall": _clean(
                {
                    "J": self.j,
                    "F": self.f,
                    "J&F": self.jf,
                    "objects": len(self.objects),
                    "videos": len(self.videos),
                }
            ),
            "video_mean": _clean(
                {"J": self.video_mean_j, "F": self.video_mean_f, "J&F": self.video_mean_jf}
            ),
            "videos": [
                _clean(
                    {
                        "video_id": v.video_id,
                        "J": v.j,
                        "F": v.f,
                        "J&F": v.jf,
                        "objects": by_video.get(v.video_id, []),
                    }
                )
                for v in self.videos
            ],
            "options": {"skip": self.skip, "bound_th": self.bound_th},
            "warnings": list(self.warnings),
        }

    def format_table(self) -> str:
        """A plain-text table in percent, like the DAVIS / SA-V tools print."""
        width = max([len("overall (objects)"), *(len(o.video_id) for o in self.objects)])
        lines = [
            f"{'video':<{width}}  {'object':>6}  {'frames':>6}  {'J&F':>6}  {'J':>6}  {'F':>6}"
        ]
        for o in self.objects:
            lines.append(
                f"{o.video_id:<{width}}  {o.object_id:>6}  {o.frames:>6}  {_pct(o.jf)}  {_pct(o.j)}  {_pct(o.f)}"
            )
        lines.append("")
        for v in self.videos:
            lines.append(
                f"{v.video_id:<{width}}  {'all':>6}  {'':>6}  {_pct(v.jf)}  {_pct(v.j)}  {_pct(v.f)}"
            )
        lines.append(
            f"{'overall (objects)':<{width}}  {len(self.objects):>6}  {'':>6}  {_pct(self.jf)}  {_pct(self.j)}  {_pct(self.f)}"
        )
        lines.append(
            f"{'mean over videos':<{width}}  {len(self.videos):>6}  {'':>6}  "
            f"{_pct(self.video_mean_jf)}  {_pct(self.video_mean_j)}  {_pct(self.video_mean_f)}"
        )
        lines.append(f"(percent; frames counted: skip={self.skip}; bound_th={self.bound_th})")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{'n/a':>6}" if value is None or math.isnan(value) else f"{100.0 * value:6.1f}"


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ---------------------------------------------------------------------------------------------
# Tables


def evaluate_tables(
    predictions: pa.Table,
    ground_truth: pa.Table,
    *,
    skip: str = "first-last",
    bound_th: float = DEFAULT_BOUND_TH,
    absent_as_empty: bool = True,
) -> EvalReport:
    """Score prediction rows against ground-truth rows (both in MASK_SCHEMA's columns).

    Every (video, object) of the ground truth that shows the object in at
    least one frame is scored; prediction rows for other videos or objects
    are ignored (and listed in ``warnings``).
    """
    if skip not in SKIP_MODES:
        raise ValueError(f"skip must be one of {SKIP_MODES}, got {skip!r}")
    boundary_tolerance(1, 1, bound_th)  # validates bound_th
    _check_columns(predictions, "predictions")
    _check_columns(ground_truth, "ground truth")

    warnings: list[str] = []
    gt_videos = sorted(set(ground_truth.column("video_id").to_pylist()))
    pred_videos = set(predictions.column("video_id").to_pylist())
    _check_overlap(predictions, ground_truth)
    extra_videos = sorted(pred_videos - set(gt_videos))
    if extra_videos:
        warnings.append(
            f"predictions for {len(extra_videos)} video(s) not in the ground truth ignored: {extra_videos[:5]}"
        )

    object_scores: list[ObjectScore] = []
    video_scores: list[VideoScore] = []
    for video_id in gt_videos:
        gt_rows = ground_truth.filter(pc.equal(ground_truth.column("video_id"), video_id))
        pred_rows = predictions.filter(pc.equal(predictions.column("video_id"), video_id))
        if pred_rows.num_rows == 0:
            warnings.append(f"video {video_id}: no predictions; scored as empty masks")
        scores = _evaluate_video(
            video_id, pred_rows, gt_rows, skip, bound_th, absent_as_empty, warnings
        )
        object_scores.extend(scores)
        if scores:
            video_scores.append(
                VideoScore(
                    video_id=video_id,
                    j=_nanmean([s.j for s in scores]),
                    f=_nanmean([s.f for s in scores]),
                    jf=_nanmean([s.jf for s in scores]),
                    objects=len(scores),
                )
            )
    return EvalReport(
        objects=object_scores,
        videos=video_scores,
        j=_nanmean([s.j for s in object_scores]),
        f=_nanmean([s.f for s in object_scores]),
        jf=_nanmean([s.jf for s in object_scores]),
        video_mean_j=_nanmean([v.j for v in video_scores]),
        video_mean_f=_nanmean([v.f for v in video_scores]),
        video_mean_jf=_nanmean([v.jf for v in video_scores]),
        skip=skip,
        bound_th=bound_th,
        warnings=warnings,
    )


def _check_overlap(predictions: pa.Table, ground_truth: pa.Table) -> None:
    """Refuse tables that share no video, or no (video, object): their J&F would read 0.0 as if
    everything had been missed, when they are most likely of different datasets or runs."""
    pred_keys = set(
        zip(predictions.column("video_id").to_pylist(), predictions.column("object_id").to_pylist())
    )
    gt_keys = set(
        zip(
            ground_truth.column("video_id").to_pylist(),
            ground_truth.column("object_id").to_pylist(),
        )
    )
    pred_videos, gt_videos = {v for v, _ in pred_keys}, {v for v, _ in gt_keys}

    def sides(what: str, pred: set, gt: set) -> str:
        return (
            f"predictions: {len(pred)} {what} (e.g. {sorted(map(str, pred))[:3]}), "
            f"ground truth: {len(gt)} {what} (e.g. {sorted(map(str, gt))[:3]})"
        )

    if not pred_videos & gt_videos:
        raise ValueError(
            "predictions and ground truth share no video_id, nothing to score ("
            + sides("video(s)", pred_videos, gt_videos)
            + "); are they of the same manifest?"
        )
    if not pred_keys & gt_keys:
        raise ValueError(
            "predictions and ground truth share videos but no (video_id, object_id), nothing to score ("
            + sides("object(s)", pred_keys, gt_keys)
            + "); do the manifest's object ids match the ground truth's?"
        )


def _check_columns(table: pa.Table, what: str) -> None:
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{what} table lacks column(s) {missing}; expected the mask table schema {MASK_SCHEMA.names}"
        )


def _evaluate_video(
    video_id: str,
    pred_rows: pa.Table,
    gt_rows: pa.Table,
    skip: str,
    bound_th: float,
    absent_as_empty: bool,
    warnings: list[str],
) -> list[ObjectScore]:
    gt_masks = masks_from_table(gt_rows)
    if absent_as_empty and "present" in pred_rows.column_names and pred_rows.num_rows:
        absent = pc.equal(pc.fill_null(pred_rows.column("present"), True), False)
        kept = pred_rows.filter(pc.invert(absent))
        absent_keys = {
            (video_id, int(o), int(t))
            for o, t in zip(
                pred_rows.filter(absent).column("object_id").to_pylist(),
                pred_rows.filter(absent).column("frame_index").to_pylist(),
            )
        }
    else:
        kept, absent_keys = pred_rows, set()
    pred_masks = masks_from_table(kept)
    pred_sizes = {
        (int(o), int(t)): (int(h), int(w))
        for o, t, h, w in zip(
            *(
                pred_rows.column(c).to_pylist()
                for c in ("object_id", "frame_index", "height", "width")
            )
        )
    }

    prompted: dict[int, int] = {}
    if "prompted" in pred_rows.column_names and pred_rows.num_rows:
        marked = pred_rows.filter(pc.fill_null(pred_rows.column("prompted"), False))
        for o, t in zip(
            marked.column("object_id").to_pylist(), marked.column("frame_index").to_pylist()
        ):
            prompted[int(o)] = min(int(t), prompted.get(int(o), int(t)))

    gt_objects = sorted({o for (_, o, _) in gt_masks})
    pred_objects = sorted({o for (_, o, _) in pred_masks} | {o for (_, o, _) in absent_keys})
    extra = [o for o in pred_objects if o not in gt_objects]
    if extra:
        warnings.append(
            f"video {video_id}: predicted objects {extra} are not in the ground truth; ignored"
        )

    scores = []
    for object_id in gt_objects:
        frames = sorted(t for (_, o, t) in gt_masks if o == object_id)
        visible = [t for t in frames if gt_masks[(video_id, object_id, t)].any()]
        if not visible:
            warnings.append(
                f"video {video_id} object {object_id}: never visible in the ground truth; not scored"
            )
            continue
        if skip == "first-last":
            frames = frames[1:-1]
        elif skip == "first-prompted":
            first = prompted.get(object_id, visible[0])
            frames = [t for t in frames if t != first]
        if not frames:
            warnings.append(
                f"video {video_id} object {object_id}: no frames left to score after skip={skip}"
            )
            continue
        js, fs, missing = [], [], 0
        for t in frames:
            gt = gt_masks[(video_id, object_id, t)]
            key = (video_id, object_id, t)
            size = pred_sizes.get((object_id, t))
            if size is not None and size != gt.shape:
                raise ValueError(
                    f"video {video_id} object {object_id} frame {t}: predicted mask is "
                    f"{size[0]}x{size[1]} but the ground truth is {gt.shape[0]}x{gt.shape[1]}"
                )
            pred = pred_masks.get(key)
            if pred is None:
                if key not in absent_keys:
                    missing += 1
                pred = np.zeros_like(gt)
            js.append(region_similarity(pred, gt))
            fs.append(boundary_f_measure(pred, gt, bound_th))
        if missing:
            warnings.append(
                f"video {video_id} object {object_id}: {missing} frame(s) without a prediction row (scored as empty)"
            )
        j, f = float(np.mean(js)), float(np.mean(fs))
        scores.append(ObjectScore(video_id, object_id, j, f, (j + f) / 2.0, len(frames), missing))
    return scores


# ---------------------------------------------------------------------------------------------
# URIs


def read_mask_table(uri: str, storage_options: dict | None = None) -> pa.Table:
    """Read a mask table from a Parquet file, a folder of Parquet files, or a label run's output folder.

    A label run's output folder (one holding ``_commits/`` or ``masks/``) is
    read through ``pipeline.sink.read_masks``, so only committed units count.
    """
    fs, path = url_to_fs(uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"mask table not found: {uri}")
    if fs.isdir(path):
        if any(fs.exists(posixpath.join(path, name)) for name in ("_commits", "masks")):
            from pipeline.sink import read_masks  # only label-run outputs need the sink

            return read_masks(uri, storage_options)
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet") and not _hidden(p, path))
        if not files:
            raise FileNotFoundError(f"no Parquet files under {uri}")
    else:
        files = [path]
    tables = []
    for file in files:
        with fs.open(file, "rb") as handle:
            try:
                tables.append(pq.read_table(handle))
            except pa.ArrowInvalid as error:
                raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
    for file, table in zip(files, tables):
        _check_columns(table, file)
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def _hidden(file: str, root: str) -> bool:
    """Staging and bookkeeping files (names starting with '_' or '.') are not data."""
    relative = file[len(root) :].lstrip("/")
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def evaluate_uris(
    predictions_uri: str,
    ground_truth_uri: str,
    storage_options: dict | None = None,
    ground_truth_format: str | None = None,
    **options,
) -> EvalReport:
    """:func:`evaluate_tables` on tables read with :func:`read_mask_table`; with
    ``ground_truth_format`` (an export format: davis, coco, cvat, ...) the ground truth is
    a folder in that format, read by ``pipeline.exports.read_export_table``."""
    predictions = read_mask_table(predictions_uri, storage_options)
    if ground_truth_format is None:
        ground_truth = read_mask_table(ground_truth_uri, storage_options)
    else:
        from pipeline.exports import read_export_table

        ground_truth = read_export_table(ground_truth_uri, ground_truth_format, storage_options)
    return evaluate_tables(predictions, ground_truth, **options)
