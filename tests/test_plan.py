"""Unit planning: deterministic ids (what makes retries and resume safe), grouping, conflicts."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.manifest import ObjectSpec, Prompt, VideoJob
from pipeline.plan import conflicting_jobs, plan_units, unit_id_for


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
    first = plan_units([job], "sam2.1_hiera_tiny", "ab" * 32)
    again = plan_units([_job(video_id="my clip/1")], "sam2.1_hiera_tiny", "ab" * 32)
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
    assert unit_id_for(job, job.objects, "m", "d") != unit_id_for(
        changed, changed.objects, "m", "d"
    )


def test_unit_id_changes_with_model_and_checkpoint_but_not_with_location():
    job = _job()
    base = unit_id_for(job, job.objects, "sam2.1_hiera_tiny", "aa")
    assert unit_id_for(job, job.objects, "sam2.1_hiera_small", "aa") != base
    assert unit_id_for(job, job.objects, "sam2.1_hiera_tiny", "bb") != base
    assert unit_id_for(job, job.objects, "sam2.1_hiera_tiny", None) != base
    moved = dataclasses.replace(job, location="other.jsonl line 9")
    assert unit_id_for(moved, moved.objects, "sam2.1_hiera_tiny", "aa") == base


def test_max_objects_per_unit_splits_in_manifest_order():
    units = plan_units([_job(n_objects=5)], "m", "d", max_objects_per_unit=2)
    assert [u.object_ids for u in units] == [(1, 2), (3, 4), (5,)]
    assert len({u.unit_id for u in units}) == 3
    assert [o.object_id for o in units[1].objects] == [3, 4]
    assert units[0].num_prompts == 2
    assert len(plan_units([_job(n_objects=5)], "m", "d")) == 1


def test_the_same_work_twice_is_planned_once():
    units = plan_units([_job(), _job(location="m.jsonl line 2")], "m", "d")
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
