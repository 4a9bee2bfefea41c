"""The tracker's one prompt record: checked once when made, by the rules the manifest applies too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.manifest import read_manifest
from sam2_core.prompts import ObjectPrompt, PromptError
from sam2_core.tracker import _merge_prompts


def test_a_prompt_holds_read_only_copies_in_the_documented_types():
    points = np.array([[1, 2], [3.5, 4]])
    prompt = ObjectPrompt(np.int64(7), 3, points=points, labels=[1, 0], box=(0, 0, 5, 6))
    points[0, 0] = 99  # the caller reuses its array
    assert prompt.object_id == 7 and type(prompt.object_id) is int
    assert prompt.points.dtype == np.float32 and prompt.points.tolist() == [[1, 2], [3.5, 4]]
    assert prompt.labels.dtype == np.int32 and prompt.labels.tolist() == [1, 0]
    assert prompt.box.dtype == np.float32 and prompt.box.shape == (4,)
    for array in (prompt.points, prompt.labels, prompt.box):
        assert not array.flags.writeable
    mask = ObjectPrompt(1, 0, mask=np.eye(3, dtype=np.uint8)).mask
    assert mask.dtype == bool and mask.tolist() == np.eye(3, dtype=bool).tolist()


BROKEN = [
    (dict(points=[[1, 2]]), "labels", "points and labels must be given together"),
    (dict(labels=[1]), "points", "missing: labels given without points"),
    (dict(points=[[1, 2], [3, 4]], labels=[1]), "labels", "has 1 labels for 2 points"),
    (dict(points=[[1, 2]], labels=[2]), "labels[0]", "0 (background) or 1 (foreground), got 2"),
    (dict(points=[[1, 2], [np.nan, 3]], labels=[1, 1]), "points[1]", "finite numbers"),
    (dict(points=[1, 2], labels=[1, 1]), "points", "N x 2"),
    (dict(box=[0, 0, 5, 1e39]), "box", "float32 range"),
    (dict(box=[0, 0, 5]), "box", "four finite numbers"),
    (dict(mask=np.zeros((2, 3, 4))), "mask", "2-D"),
    (dict(mask=np.zeros((2, 3)), box=[0, 0, 1, 1]), "mask", "stands alone"),
    ({}, "", "needs points (with labels), a box, or a mask"),
]  # fmt: skip


@pytest.mark.parametrize(("parts", "part", "reason"), BROKEN, ids=[b[2] for b in BROKEN])
def test_each_broken_rule_raises_naming_the_part(parts, part, reason):
    with pytest.raises(PromptError) as caught:
        ObjectPrompt(1, 0, **parts)
    assert caught.value.part == part and reason in caught.value.reason


@pytest.mark.parametrize(("object_id", "frame"), [("cat", 0), (True, 0), (1, -1), (1, 2.0)])
def test_object_ids_and_frames_must_be_integers(object_id, frame):
    with pytest.raises(ValueError, match="integer"):
        ObjectPrompt(object_id, frame, box=[0, 0, 1, 1])


@pytest.mark.parametrize(
    ("raw", "tracker_parts", "field"),
    [
        ({"points": [[1, 2]], "labels": [2]}, dict(points=[[1, 2]], labels=[2]), "labels[0]"),
        ({"points": [[1, 2]], "labels": [1, 1]}, dict(points=[[1, 2]], labels=[1, 1]), "labels"),
        ({"labels": [1]}, dict(labels=[1]), "points"),
        ({"box": [0, 0, 1, 1], "mask": {"size": [1, 1], "counts": "01"}}, dict(box=[0, 0, 1, 1], mask=np.ones((1, 1))), "mask"),
    ],
)  # fmt: skip
def test_the_manifest_rejects_by_the_same_rule_and_words_as_the_tracker(
    tmp_path, raw, tracker_parts, field
):
    line = {"video": "/v.mp4", "objects": [{"object_id": 1, "prompts": [{"frame": 0, **raw}]}]}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(line) + "\n")
    jobs, (reject,) = read_manifest(str(path))
    with pytest.raises(PromptError) as caught:
        ObjectPrompt(1, 0, **tracker_parts)
    assert jobs == []
    assert reject.field == f"objects[0].prompts[0].{field}"
    assert caught.value.part == field and reject.reason == caught.value.reason


def test_prompts_of_one_object_and_frame_are_joined_into_one_in_frame_order():
    merged = _merge_prompts(
        [
            ObjectPrompt(2, 4, points=[[1, 1]], labels=[1]),
            ObjectPrompt(1, 4, box=[0, 0, 9, 9]),
            ObjectPrompt(2, 4, points=[[2, 2], [3, 3]], labels=[0, 1], box=[1, 1, 5, 5]),
            ObjectPrompt(1, 2, mask=np.ones((4, 4), bool)),
        ],
        num_frames=5,
    )
    assert [(p.object_id, p.frame) for p in merged] == [(1, 2), (1, 4), (2, 4)]
    joined = merged[2]
    assert joined.points.tolist() == [[1, 1], [2, 2], [3, 3]] and joined.labels.tolist() == [
        1,
        0,
        1,
    ]
    assert joined.box.tolist() == [1, 1, 5, 5]


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (ObjectPrompt(1, 0, mask=np.ones((2, 2))), "mask prompt cannot be combined"),
        (ObjectPrompt(1, 0, box=[0, 0, 2, 2]), "more than one box"),
    ],
)
def test_prompts_that_cannot_share_a_frame_are_refused(second, reason):
    first = ObjectPrompt(1, 0, points=[[1, 1]], labels=[1], box=[0, 0, 1, 1])
    with pytest.raises(ValueError, match=reason):
        _merge_prompts([first, second], num_frames=1)
    with pytest.raises(ValueError, match="past the video's end"):
        _merge_prompts([ObjectPrompt(1, 1, box=[0, 0, 1, 1])], num_frames=1)
