"""Corrections back in: a reviewed export becomes a manifest whose prompts carry the fixes.

A person reviews a run in an annotation tool (``jobs export``), changes masks,
deletes objects, adds new ones, and exports again. :func:`import_corrections`
compares that export with what the run's own export reads back as (the same
writer and reader, so a DAVIS overlap or an untouched frame never counts as a
change) per (video, object, frame), and writes a new manifest:

- each original entry keeps its objects' original prompts, plus a mask prompt
  (COCO RLE) on every frame whose mask the person changed; a changed frame that
  already had a prompt takes the mask instead (an erased mask is an empty one);
- an object the run showed but the export no longer has is dropped;
- an object the person added gets the next free id of its video and a mask
  prompt on each frame it is drawn on;
- videos the export does not hold stay as they were;
- an object keeps its manifest ``category``; an added one has none. Every object of the
  new manifest is prompted, so the re-run writes its rows with source "prompt" (a person
  drew or checked it), whatever found it first (a masklet, a detector).

``jobs label --manifest NEW --output NEW_OUT`` then re-tracks every object with
the person's masks as conditioning frames. A reviewed mask on a frame past the
end of its video, of another size, or naming an object of another video is
refused with the file and entry, and nothing is written.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.exports import RunReader, export_run, read_export
from pipeline.exports.reviewed import ReviewedMask, union_masks
from pipeline.manifest import Prompt, VideoJob, read_manifest
from pipeline.runs import run_jobs
from pipeline.storage import absolute_uri, url_to_fs

MAX_LISTED = 20
MANIFEST_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class CorrectionProblem:
    where: str  # file and entry of the reviewed export
    reason: str


class CorrectionsError(ValueError):
    """The reviewed export does not fit the run; lists every problem (file, entry, reason)."""

    def __init__(self, source: str, problems: list[CorrectionProblem]):
        self.problems = problems
        listed = "".join(f"\n  {p.where}: {p.reason}" for p in problems[:MAX_LISTED])
        more = len(problems) - MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{source}: {len(problems)} correction(s) do not fit the run; nothing written:"
            f"{listed}{tail}"
        )


@dataclass(frozen=True)
class VideoCorrections:
    """What the review changed in one video."""

    video_id: str
    corrected: dict[int, tuple[int, ...]] = field(default_factory=dict)  # object -> frames
    dropped: tuple[int, ...] = ()
    added: dict[int, str] = field(default_factory=dict)  # new object id -> the tool's name

    @property
    def changed(self) -> bool:
        return bool(self.corrected or self.dropped or self.added)


@dataclass(frozen=True)
class CorrectionsResult:
    manifest: str
    manifest_out: str
    videos: tuple[VideoCorrections, ...]
    unreviewed: tuple[str, ...]  # manifest videos the export does not hold: kept as they were
    entries: int  # videos in the new manifest

    def lines(self) -> list[str]:
        """A short human report, one line per reviewed video."""
        out = []
        for video in self.videos:
            frames = sum(len(f) for f in video.corrected.values())
            added = ", ".join(f"{oid} ({name})" for oid, name in video.added.items())
            out.append(
                f"{video.video_id}: {frames} corrected frame(s) on {len(video.corrected)} "
                f"object(s); dropped {list(video.dropped) or 'none'}; new {added or 'none'}"
            )
        return out


@dataclass
class _VideoFacts:
    frames: int
    height: int
    width: int
    run_objects: set[int]


def import_corrections(
    run_uri: str,
    format: str,
    source_uri: str,
    manifest_out: str,
    *,
    manifest: str | None = None,
    storage_options: dict | None = None,
    source_storage_options: dict | None = None,
    out_storage_options: dict | None = None,
) -> CorrectionsResult:
    """Write the corrected manifest for the reviewed export ``source_uri`` of ``run_uri``.

    ``manifest`` defaults to the one the run's summary.json names. Raises
    CorrectionsError (a ValueError) listing every reviewed mask that does not fit
    the run, ValueError for a format that cannot be read back.
    """
    if not manifest_out.lower().endswith(MANIFEST_SUFFIXES):
        raise ValueError(f"--manifest-out {manifest_out}: name a JSON Lines file (*.jsonl)")
    manifest_uri, jobs = run_jobs(run_uri, storage_options, manifest)
    reviewed = read_export(source_uri, format, source_storage_options)
    reader = RunReader(run_uri, storage_options)
    facts, problems = _check(reviewed.videos, reviewed.masks, reader, jobs, run_uri, manifest_uri)
    if problems:
        raise CorrectionsError(source_uri, problems)
    with tempfile.TemporaryDirectory(prefix="sam2-review-baseline-") as baseline_dir:
        export_run(run_uri, format, baseline_dir, storage_options=storage_options)
        baseline = read_export(baseline_dir, format)

    reviewed_by_video = _by_video(reviewed.masks)
    baseline_by_video = _by_video(baseline.masks)
    entries, videos, unreviewed = [], [], []
    for video_id, job in jobs.items():
        if video_id not in reviewed.videos:
            unreviewed.append(video_id)
            kept = [_object_json(o.object_id, o.prompts, category=o.category) for o in job.objects]
            entries.append(_entry(job, kept))
            continue
        objects, summary = _correct_video(
            job,
            facts[video_id],
            union_masks(reviewed_by_video.get(video_id, [])),
            union_masks(baseline_by_video.get(video_id, [])),
            reviewed.frames.get(video_id, set()),
        )
        videos.append(summary)
        if objects:
            entries.append(_entry(job, objects))
    _write_manifest(manifest_out, entries, out_storage_options)
    return CorrectionsResult(
        manifest_uri, manifest_out, tuple(videos), tuple(unreviewed), len(entries)
    )


def _by_video(masks: list[ReviewedMask]) -> dict[str, list[ReviewedMask]]:
    out: dict[str, list[ReviewedMask]] = defaultdict(list)
    for mask in masks:
        out[mask.video_id].append(mask)
    return out


def _check(
    videos: dict[str, str],
    masks: list[ReviewedMask],
    reader: RunReader,
    jobs: dict[str, VideoJob],
    run_uri: str,
    manifest_uri: str,
) -> tuple[dict[str, _VideoFacts], list[CorrectionProblem]]:
    """Facts per reviewed video from the run's rows, and every reviewed mask that does
    not fit them: unknown video, frame past the end, other size, another video's object."""
    problems: list[CorrectionProblem] = []
    facts: dict[str, _VideoFacts] = {}
    run_videos = set(reader.video_ids())
    owners: dict[int, set[str]] = defaultdict(set)
    for job in jobs.values():
        for spec in job.objects:
            owners[spec.object_id].add(job.video_id)
    for video_id, where in sorted(videos.items()):
        if video_id not in run_videos:
            known = ", ".join(sorted(run_videos)[:10])
            problems.append(
                CorrectionProblem(
                    where, f"video {video_id!r} is not in the run {run_uri} ({known})"
                )
            )
        elif video_id not in jobs:
            problems.append(
                CorrectionProblem(
                    where, f"video {video_id!r} is not in the manifest {manifest_uri}"
                )
            )
        else:
            rows = reader.video(video_id)
            facts[video_id] = _VideoFacts(
                rows.frame_count, rows.height, rows.width, set(rows.object_ids())
            )
    for mask in masks:
        fact = facts.get(mask.video_id)
        if fact is None:
            continue
        if not 0 <= mask.frame_index < fact.frames:
            problems.append(
                CorrectionProblem(
                    mask.where,
                    f"frame {mask.frame_index} is past the end of video {mask.video_id!r} "
                    f"({fact.frames} frames: 0..{fact.frames - 1})",
                )
            )
        if (mask.height, mask.width) != (fact.height, fact.width):
            problems.append(
                CorrectionProblem(
                    mask.where,
                    f"mask is {mask.width} x {mask.height}; video {mask.video_id!r} is "
                    f"{fact.width} x {fact.height}",
                )
            )
        own = {o.object_id for o in jobs[mask.video_id].objects} | fact.run_objects
        if mask.object_id is not None and mask.object_id not in own and owners[mask.object_id]:
            others = ", ".join(repr(v) for v in sorted(owners[mask.object_id]))
            problems.append(
                CorrectionProblem(
                    mask.where,
                    f"object {mask.object_id} belongs to video {others}, not {mask.video_id!r}",
                )
            )
    return facts, problems


def _correct_video(
    job: VideoJob,
    fact: _VideoFacts,
    reviewed: dict[tuple[str, str, int], np.ndarray],
    baseline: dict[tuple[str, str, int], np.ndarray],
    covered: set[int],
) -> tuple[list[dict], VideoCorrections]:
    """The corrected objects of one manifest entry (manifest JSON) and what changed."""
    by_key: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for (_, key, frame), mask in reviewed.items():
        by_key[key][frame] = mask
    base_by_key: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for (_, key, frame), mask in baseline.items():
        base_by_key[key][frame] = mask
    empty = np.zeros((fact.height, fact.width), bool)
    objects, corrected, dropped = [], {}, []
    for spec in job.objects:
        key = f"object {spec.object_id}"
        mine, before = by_key.pop(key, {}), base_by_key.get(key, {})
        if not mine and before:
            dropped.append(spec.object_id)
            continue
        frames = [
            f
            for f in sorted((set(mine) | set(before)) & covered)
            if not np.array_equal(mine.get(f, empty), before.get(f, empty))
        ]
        masks = [(f, mine.get(f, empty)) for f in frames]
        kept = tuple(p for p in spec.prompts if p.frame not in set(frames))
        objects.append(_object_json(spec.object_id, kept, masks, spec.category))
        if frames:
            corrected[spec.object_id] = tuple(frames)
    added = {}
    next_id = max({o.object_id for o in job.objects} | fact.run_objects, default=0) + 1
    for key in sorted(by_key, key=lambda k: (min(by_key[k]), k)):
        frames = sorted(by_key[key])
        objects.append(_object_json(next_id, (), [(f, by_key[key][f]) for f in frames]))
        added[next_id] = key
        next_id += 1
    return objects, VideoCorrections(job.video_id, corrected, tuple(dropped), added)


def prompt_json(prompt: Prompt) -> dict:
    """A validated prompt as a manifest prompt object (the README's Manifest format)."""
    out: dict = {"frame": prompt.frame}
    if prompt.points is not None:
        out["points"] = [list(p) for p in prompt.points]
        out["labels"] = list(prompt.labels or ())
    if prompt.box is not None:
        out["box"] = list(prompt.box)
    if prompt.mask_rle is not None:
        out["mask"] = prompt.mask_rle
    return out


def mask_prompt_json(frame: int, mask: np.ndarray) -> dict:
    from pipeline.masks import encode_mask

    return {"frame": frame, "mask": {"size": list(mask.shape), "counts": encode_mask(mask)[0]}}


def _object_json(
    object_id: int,
    prompts: tuple[Prompt, ...],
    masks: list[tuple[int, np.ndarray]] = (),
    category: str | None = None,
) -> dict:
    items = [(p.frame, prompt_json(p)) for p in prompts]
    items += [(f, mask_prompt_json(f, m)) for f, m in masks]
    out = {"object_id": object_id, "prompts": [p for _, p in sorted(items, key=lambda i: i[0])]}
    if category is not None:
        out["category"] = category
    return out


def _entry(job: VideoJob, objects: list[dict]) -> dict:
    return {"video": absolute_uri(job.video), "video_id": job.video_id, "objects": objects}


def _write_manifest(uri: str, entries: list[dict], storage_options: dict | None) -> None:
    """Write the JSONL manifest, then read it back through the manifest validator: a
    corrected manifest that ``jobs label`` would reject is this module's bug."""
    if not entries:
        raise ValueError(f"{uri}: the corrections leave no object to label (all deleted)")
    fs, path = url_to_fs(uri, storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
    _, rejects = read_manifest(uri, storage_options=storage_options)
    if rejects:
        raise RuntimeError(f"{uri}: the corrected manifest has rejects: {rejects[:3]}")
