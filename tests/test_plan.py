"""Unit planning: deterministic ids (what makes retries and resume safe), the video's identity
in them (a replaced video is not taken for labeled), grouping, conflicts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from labeling_helpers import make_clip, run_config, write_jsonl
from s3_server import start_s3

from pipeline.coordinator import RunFatalError, run_labeling
from pipeline.manifest import ObjectSpec, Prompt, VideoJob
from pipeline.plan import conflicting_jobs, plan_units, unit_id_for, why_other_labeling
from pipeline.sink import OutputStore
from pipeline.video_identity import MISSING_VIDEO, video_identities

IDENTITIES = {"s3://b/clips/a.mp4": "size=1000 ETag=0123"}  # the video of _job(), as planned


def _job(video="s3://b/clips/a.mp4", video_id="a", n_objects=3, frame=0, location="m.jsonl line 1"):
    objects = tuple(
        ObjectSpec(
            object_id=i + 1,
            prompts=(Prompt(frame=frame, points=((10.0 + i, 20.0),), labels=(1,)),),
        )
        for i in range(n_objects)
    )
    return VideoJob(video=video, video_id=video_id, objects=objects, location=location)


def test_unit_id_is_stable_and_file_name_safe():
    job = _job(video_id="my clip/1")
    first = plan_units([job], "sam2.1_hiera_tiny", "ab" * 32, identities=IDENTITIES)
    again = plan_units(
        [_job(video_id="my clip/1")], "sam2.1_hiera_tiny", "ab" * 32, identities=IDENTITIES
    )
    assert [u.unit_id for u in first] == [u.unit_id for u in again]
    (unit,) = first
    assert unit.unit_id.startswith("my_clip_1-")
    assert "/" not in unit.unit_id and " " not in unit.unit_id
    assert unit.object_ids == (1, 2, 3)


@pytest.mark.parametrize(
    "change",
    [
        lambda j: dataclasses.replace(j, video="s3://b/clips/b.mp4"),
        lambda j: dataclasses.replace(j, video_id="other"),
        lambda j: dataclasses.replace(
            j, objects=(dataclasses.replace(j.objects[0], object_id=9), *j.objects[1:])
        ),
        lambda j: dataclasses.replace(
            j,
            objects=(
                dataclasses.replace(
                    j.objects[0], prompts=(Prompt(frame=0, points=((10.5, 20.0),), labels=(1,)),)
                ),
                *j.objects[1:],
            ),
        ),
        lambda j: dataclasses.replace(
            j,
            objects=(
                dataclasses.replace(
                    j.objects[0], prompts=(Prompt(frame=0, points=((10.0, 20.0),), labels=(0,)),)
                ),
                *j.objects[1:],
            ),
        ),
    ],
    ids=["video-uri", "video-id", "object-id", "point", "label"],
)
def test_unit_id_changes_with_anything_that_changes_the_output(change):
    job = _job()
    changed = change(job)
    assert unit_id_for(job, job.objects, "m", "d", "size=1") != unit_id_for(
        changed, changed.objects, "m", "d", "size=1"
    )


def test_unit_id_changes_with_model_and_checkpoint_but_not_with_location():
    job = _job()
    base = unit_id_for(job, job.objects, "sam2.1_hiera_tiny", "aa", "size=1")
    assert unit_id_for(job, job.objects, "sam2.1_hiera_small", "aa", "size=1") != base
    assert unit_id_for(job, job.objects, "sam2.1_hiera_tiny", "bb", "size=1") != base
    assert unit_id_for(job, job.objects, "sam2.1_hiera_tiny", None, "size=1") != base
    moved = dataclasses.replace(job, location="other.jsonl line 9")
    assert unit_id_for(moved, moved.objects, "sam2.1_hiera_tiny", "aa", "size=1") == base


def test_max_objects_per_unit_splits_in_manifest_order():
    units = plan_units([_job(n_objects=5)], "m", "d", 2, identities=IDENTITIES)
    assert [u.object_ids for u in units] == [(1, 2), (3, 4), (5,)]
    assert len({u.unit_id for u in units}) == 3
    assert [o.object_id for o in units[1].objects] == [3, 4]
    assert units[0].num_prompts == 2
    assert len(plan_units([_job(n_objects=5)], "m", "d", identities=IDENTITIES)) == 1


def test_the_same_work_twice_is_planned_once():
    units = plan_units([_job(), _job(location="m.jsonl line 2")], "m", "d", identities=IDENTITIES)
    assert len(units) == 1


def test_conflicting_jobs_rejects_a_second_job_labeling_the_same_objects():
    first = _job(video="a.mp4", video_id="same", location="m.jsonl line 1")
    second = _job(video="b.mp4", video_id="same", location="m.jsonl line 2")
    other = _job(video="c.mp4", video_id="c", location="m.jsonl line 3")
    kept, rejects = conflicting_jobs([first, second, other])
    assert kept == [first, other]
    assert len(rejects) == 1
    assert rejects[0].location == "m.jsonl line 2"
    assert "m.jsonl line 1" in rejects[0].reason and rejects[0].field == "video_id"


# ---------------------------------------------------------------- video identity


def _replace_file(path: Path, data: bytes, mtime: float) -> None:
    """Write `data` at `path` with a given modification time (whole seconds apart, so the
    test does not depend on the file system's timestamp resolution)."""
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_a_video_replaced_at_the_same_path_gets_new_unit_ids(tmp_path):
    video = tmp_path / "clip.mp4"
    _replace_file(video, b"first video", 1_700_000_000)
    job = _job(video=str(video))

    def plan() -> list[str]:
        identities = video_identities([job.video])
        return [u.unit_id for u in plan_units([job], "m", "d", 2, identities=identities)]

    before = plan()
    assert plan() == before  # unchanged video: the same ids, so a re-run resumes
    _replace_file(video, b"other video", 1_700_000_000)  # same size and time: indistinguishable
    assert plan() == before
    _replace_file(video, b"other video", 1_700_000_100)
    replaced = plan()
    assert len(replaced) == len(before) == 2 and not set(replaced) & set(before)
    _replace_file(video, b"a longer video", 1_700_000_100)
    assert not set(plan()) & set(replaced)


def test_video_identity_of_objects_in_s3_follows_their_content(tmp_path):
    with start_s3(buckets=["plan-identity"]) as s3:
        fs = s3.filesystem()
        uri = "s3://plan-identity/clips/a.mp4"
        fs.pipe(uri, b"first video")
        first = video_identities([uri], s3.storage_options)[uri]
        assert first.startswith("size=11 ETag=")
        fs.pipe(uri, b"first video")  # the same bytes uploaded again: the same identity
        assert video_identities([uri], s3.storage_options)[uri] == first
        fs.pipe(uri, b"other video")
        assert video_identities([uri], s3.storage_options)[uri] != first
        # a folder of frames: one listing, changed by any frame file
        for index in range(3):
            fs.pipe(f"s3://plan-identity/frames/{index:05d}.jpg", b"frame %d" % index)
        folder = "s3://plan-identity/frames"
        listed = video_identities([folder], s3.storage_options)[folder]
        assert listed.startswith("frames=3 size=21 ")
        fs.pipe("s3://plan-identity/frames/00001.jpg", b"frame X")
        assert video_identities([folder], s3.storage_options)[folder] != listed
        missing = "s3://plan-identity/clips/none.mp4"
        assert video_identities([missing], s3.storage_options) == {missing: MISSING_VIDEO}


@pytest.mark.slow
def test_rerun_after_the_video_was_replaced_is_refused_naming_the_replaced_video(
    ray_local, videos_dir, mini_a_dir, tmp_path
):
    """Resuming would keep the masks of the old video; re-labeling beside them would give two
    masks per object and frame. The run stops before any work and says what changed."""
    clip = make_clip(videos_dir / "01_dog.mp4", tmp_path / "clip.mp4", frames=6)
    entry = {
        "video": str(clip),
        "video_id": "dog",
        "objects": [
            {"object_id": 1, "prompts": [{"frame": 0, "points": [[64, 50]], "labels": [1]}]}
        ],
    }
    manifest = write_jsonl(tmp_path / "m.jsonl", [entry])
    out = tmp_path / "out"
    first = run_labeling(run_config(manifest, out, mini_a_dir, workers=1))
    assert first.exit_code == 0, first.failures
    committed = OutputStore(str(out)).committed_units()
    assert len(committed) == 1

    again = run_labeling(run_config(manifest, out, mini_a_dir, workers=1))
    assert (again.exit_code, again.summary.skipped) == (0, 1)  # unchanged: resumes

    make_clip(videos_dir / "04_coffee.mp4", clip, frames=6)  # another video at the same path
    with pytest.raises(
        RunFatalError, match=r"clip\.mp4 was replaced since it was labeled.*new --output"
    ):
        run_labeling(run_config(manifest, out, mini_a_dir, workers=1))
    assert OutputStore(str(out)).committed_units() == committed


def test_refusal_reason_names_what_changed_since_the_committed_unit():
    (unit,) = plan_units([_job()], "m", "d", identities=IDENTITIES)
    written = {"video_id": "a", "video": _job().video, "model": "mini@0123", "object_ids": [1]}
    now = IDENTITIES[_job().video]
    replaced = {**written, "video_identity": "size=999 ETag=4567"}
    assert why_other_labeling(replaced, [unit], "mini@0123") == (
        f"the video s3://b/clips/a.mp4 was replaced since it was labeled "
        f"(size=999 ETag=4567; now {now})"
    )
    same_video = {**written, "video_identity": now}
    assert "prompts" in why_other_labeling(same_video, [unit], "mini@0123")
    assert why_other_labeling(same_video, [unit], "tiny@89ab") == (
        "another model (mini@0123; this run: tiny@89ab)"
    )
    moved = {**same_video, "video": "https://user:pw@host/a.mp4"}
    assert why_other_labeling(moved, [unit], "mini@0123") == (
        "another video file (https://host/a.mp4; this run: s3://b/clips/a.mp4)"
    )
    assert "earlier version" in why_other_labeling(written, [unit], "mini@0123")


PINNED_LINE = {
    "video": "s3://bucket/clips/cups.mp4",
    "video_id": "cups",
    "objects": [
        {
            "object_id": 1,
            "prompts": [
                {"frame": 0, "points": [[412.3, 300], [10.25, 7.1]], "labels": [1, 0]},
                {
                    "frame": 7,
                    "box": [100, 120.5, 300, 400],
                    "points": [[150.5, 200]],
                    "labels": [1],
                },
            ],
        },
        {"object_id": 2, "prompts": [{"frame": 3, "mask": {"size": [2, 3], "counts": "2120"}}]},
    ],
}


def test_unit_ids_of_a_fixed_manifest_line_never_change(tmp_path):
    """Ids computed before prompts got one shared type: a change here would make resumed runs
    relabel (or, worse, mix) work committed under the old ids."""
    from pipeline.manifest import read_manifest

    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", [PINNED_LINE])))
    assert rejects == []
    (job,) = jobs
    assert (
        unit_id_for(job, job.objects, "sam2.1_hiera_tiny", "ab" * 32, "size=1000 ETag=0123")
        == "cups-855d862f1d5b1ca8a0e440ff"
    )
    assert unit_id_for(job, job.objects[1:], "sam2.1_hiera_tiny", None, "") == (
        "cups-f43984084b97124cad40e757"
    )
