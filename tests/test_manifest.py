"""Manifests: JSONL / Parquet / CSV into validated jobs; every problem named by line/row and field."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_server import start_s3

from pipeline.manifest import (
    EmptyManifestError,
    ObjectSpec,
    Prompt,
    Reject,
    VideoJob,
    default_video_id,
    fit_prompt_to_frame,
    read_manifest,
)
from pipeline.masks import encode_mask

MASK = np.zeros((54, 96), bool)
MASK[10:30, 20:60] = True
MASK_RLE = {"size": [54, 96], "counts": encode_mask(MASK)[0]}

EXAMPLE = {
    "video": "s3://bucket/clips/cups.mp4",
    "video_id": "cups",
    "objects": [
        {"object_id": 1, "prompts": [{"frame": 0, "points": [[412, 300]], "labels": [1]}]},
        {
            "object_id": 2,
            "prompts": [
                {"frame": 0, "box": [100, 120, 300, 400]},
                {"frame": 50, "points": [[180, 260]], "labels": [0]},
            ],
        },
        {"object_id": 3, "prompts": [{"frame": 10, "mask": MASK_RLE}]},
    ],
}

EXAMPLE_JOB_OBJECTS = (
    ObjectSpec(1, (Prompt(frame=0, points=((412.0, 300.0),), labels=(1,)),)),
    ObjectSpec(
        2,
        (
            Prompt(frame=0, box=(100.0, 120.0, 300.0, 400.0)),
            Prompt(frame=50, points=((180.0, 260.0),), labels=(0,)),
        ),
    ),
    ObjectSpec(3, (Prompt(frame=10, mask_rle=MASK_RLE),)),
)


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


def one_object(prompt: dict, **video) -> dict:
    return {"video": "/data/v.mp4", "objects": [{"object_id": 1, "prompts": [prompt]}], **video}


def test_example_manifest_becomes_one_job(tmp_path):
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", [EXAMPLE])))
    assert rejects == []
    assert jobs == [
        VideoJob(
            video="s3://bucket/clips/cups.mp4",
            video_id="cups",
            objects=EXAMPLE_JOB_OBJECTS,
            location="m.jsonl line 1",
        )
    ]


def test_default_video_id_is_stable_readable_and_distinct():
    first = default_video_id("s3://bucket/a/cups.mp4")
    assert first == default_video_id("s3://bucket/a/cups.mp4")
    assert first.startswith("cups-")
    assert first != default_video_id("s3://bucket/b/cups.mp4")
    assert default_video_id("s3://bucket/frames/cups/") == default_video_id(
        "s3://bucket/frames/cups"
    )
    assert default_video_id("/x/we ird?.mp4").startswith("we_ird-")


def test_defaults_and_relative_paths_resolve_against_the_manifest(tmp_path):
    lines = [
        one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="clips/a.mp4"),
        one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/abs/b.mp4"),
        one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="s3://bucket/c.mp4"),
    ]
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", lines)))
    assert rejects == []
    assert [job.video for job in jobs] == [
        str(tmp_path / "clips" / "a.mp4"),
        "/abs/b.mp4",
        "s3://bucket/c.mp4",
    ]
    assert [job.video_id for job in jobs] == [default_video_id(job.video) for job in jobs]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    good = one_object({"frame": 0, "box": [0, 0, 5, 5]})
    lines = ["", json.dumps(good), "   ", "{broken"]
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", lines)))
    assert [job.location for job in jobs] == ["m.jsonl line 2"]
    assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 4", "line")]
    assert "malformed JSON" in rejects[0].reason and rejects[0].raw == "{broken"


BAD_LINES = [
    ("unknown top-level field", {**one_object({"frame": 0, "box": [0, 0, 1, 1]}), "vidoe": "x"}, "vidoe", "unknown field"),
    ("missing video", {"objects": [{"object_id": 1, "prompts": [{"frame": 0, "box": [0, 0, 1, 1]}]}]}, "video", "non-empty"),
    ("empty objects", {"video": "/v.mp4", "objects": []}, "objects", "non-empty list"),
    ("object id not int", {"video": "/v.mp4", "objects": [{"object_id": "1", "prompts": [{"frame": 0, "box": [0, 0, 1, 1]}]}]}, "objects[0].object_id", "non-negative integer"),
    ("object id bool", {"video": "/v.mp4", "objects": [{"object_id": True, "prompts": [{"frame": 0, "box": [0, 0, 1, 1]}]}]}, "objects[0].object_id", "non-negative integer"),
    ("unknown object field", {"video": "/v.mp4", "objects": [{"object_id": 1, "name": "cup", "prompts": [{"frame": 0, "box": [0, 0, 1, 1]}]}]}, "objects[0].name", "unknown field"),
    ("no prompts", {"video": "/v.mp4", "objects": [{"object_id": 1, "prompts": []}]}, "objects[0].prompts", "non-empty list"),
    ("unknown prompt field", one_object({"frame": 0, "point": [[1, 2]]}), "objects[0].prompts[0].point", "unknown field"),
    ("missing frame", one_object({"box": [0, 0, 1, 1]}), "objects[0].prompts[0].frame", "missing"),
    ("negative frame", one_object({"frame": -3, "box": [0, 0, 1, 1]}), "objects[0].prompts[0].frame", "non-negative"),
    ("fractional frame", one_object({"frame": 1.5, "box": [0, 0, 1, 1]}), "objects[0].prompts[0].frame", "non-negative integer"),
    ("points without labels", one_object({"frame": 0, "points": [[1, 2]]}), "objects[0].prompts[0].labels", "missing"),
    ("labels without points", one_object({"frame": 0, "labels": [1]}), "objects[0].prompts[0].points", "missing"),
    ("label count mismatch", one_object({"frame": 0, "points": [[1, 2], [3, 4]], "labels": [1]}), "objects[0].prompts[0].labels", "1 labels for 2 points"),
    ("label -1", one_object({"frame": 0, "points": [[1, 2]], "labels": [-1]}), "objects[0].prompts[0].labels[0]", "0 (background) or 1"),
    ("label 2", one_object({"frame": 0, "points": [[1, 2]], "labels": [2]}), "objects[0].prompts[0].labels[0]", "0 (background) or 1"),
    ("point not a pair", one_object({"frame": 0, "points": [1, 2], "labels": [1, 1]}), "objects[0].prompts[0].points[0]", "[x, y]"),
    ("NaN point", one_object({"frame": 0, "points": [[float("nan"), 2]], "labels": [1]}), "objects[0].prompts[0].points[0]", "finite"),
    ("box of three", one_object({"frame": 0, "box": [1, 2, 3]}), "objects[0].prompts[0].box", "four finite numbers"),
    ("box x2 <= x1", one_object({"frame": 0, "box": [10, 2, 10, 8]}), "objects[0].prompts[0].box", "x2 > x1"),
    ("box y2 <= y1", one_object({"frame": 0, "box": [1, 8, 10, 2]}), "objects[0].prompts[0].box", "y2 > y1"),
    ("no prompt content", one_object({"frame": 0}), "objects[0].prompts[0]", "needs points"),
    ("box and mask", one_object({"frame": 0, "box": [0, 0, 1, 1], "mask": MASK_RLE}), "objects[0].prompts[0].mask", "stands alone"),
    ("mask size", one_object({"frame": 0, "mask": {"size": [54], "counts": MASK_RLE["counts"]}}), "objects[0].prompts[0].mask.size", "[height, width]"),
    ("mask counts wrong size", one_object({"frame": 0, "mask": {"size": [54, 95], "counts": MASK_RLE["counts"]}}), "objects[0].prompts[0].mask.counts", "cover"),
    ("mask counts garbage", one_object({"frame": 0, "mask": {"size": [2, 2], "counts": "\u00e9\u00e9"}}), "objects[0].prompts[0].mask.counts", "invalid character"),
    ("mask counts list", one_object({"frame": 0, "mask": {"size": [2, 2], "counts": [0, 4]}}), "objects[0].prompts[0].mask.counts", "compressed RLE text"),
    ("mask extra key", one_object({"frame": 0, "mask": {**MASK_RLE, "area": 3}}), "objects[0].prompts[0].mask", "size"),
    ("two prompts on one frame", {"video": "/v.mp4", "objects": [{"object_id": 1, "prompts": [{"frame": 4, "box": [0, 0, 1, 1]}, {"frame": 4, "points": [[1, 1]], "labels": [1]}]}]}, "objects[0].prompts[1].frame", "second prompt on frame 4"),
    ("duplicate object ids", {"video": "/v.mp4", "objects": [{"object_id": 7, "prompts": [{"frame": 0, "box": [0, 0, 1, 1]}]}, {"object_id": 7, "prompts": [{"frame": 0, "box": [0, 0, 2, 2]}]}]}, "objects[1].object_id", "duplicate object id 7"),
    ("video id not a string", one_object({"frame": 0, "box": [0, 0, 1, 1]}, video_id=5), "video_id", "non-empty string"),
    ("not an object", [1, 2, 3], "line", "JSON object"),
    ("null line", None, "line", "JSON object, got null"),
    ("box beyond float32", one_object({"frame": 0, "box": [0, 0, 5, 1e39]}), "objects[0].prompts[0].box", "float32"),
    ("point a 400-digit int", one_object({"frame": 0, "points": [[10**400, 1]], "labels": [1]}), "objects[0].prompts[0].points[0]", "float32"),
    ("Infinity point", one_object({"frame": 0, "points": [[float("inf"), 1]], "labels": [1]}), "objects[0].prompts[0].points[0]", "finite"),
    ("NaN box", one_object({"frame": 0, "box": [0, 0, float("nan"), 5]}), "objects[0].prompts[0].box", "finite"),
    ("frame past int64", one_object({"frame": 2**63, "box": [0, 0, 1, 1]}), "objects[0].prompts[0].frame", "non-negative integer"),
    ("video a lone surrogate", one_object({"frame": 0, "box": [0, 0, 1, 1]}, video="/v/\ud800.mp4"), "video", "not valid Unicode"),
    ("video id a lone surrogate", one_object({"frame": 0, "box": [0, 0, 1, 1]}, video_id="a\udfff"), "video_id", "not valid Unicode"),
    ("video with a newline", one_object({"frame": 0, "box": [0, 0, 1, 1]}, video="/v/a\nb.mp4"), "video", "control characters"),
    ("labels ragged", one_object({"frame": 0, "points": [[1, 2]], "labels": [1, [1, 2]]}), "objects[0].prompts[0].labels", "one entry per point"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "line", "field", "reason"), BAD_LINES, ids=[c[0] for c in BAD_LINES]
)
def test_each_problem_is_rejected_with_line_and_field_while_the_rest_is_kept(
    tmp_path, case, line, field, reason
):
    good_before = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/ok/before.mp4")
    good_after = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/ok/after.mp4")
    path = write_jsonl(tmp_path / "m.jsonl", [good_before, line, good_after])
    jobs, rejects = read_manifest(str(path))
    assert [job.video for job in jobs] == ["/ok/before.mp4", "/ok/after.mp4"]
    assert len(rejects) == 1, rejects
    reject = rejects[0]
    assert isinstance(reject, Reject)
    assert (reject.location, reject.field) == ("m.jsonl line 2", field)
    assert reason in reject.reason
    assert reject.raw == json.dumps(line)


def test_all_problems_of_a_line_are_reported(tmp_path):
    line = {
        "video": "/v.mp4",
        "extra": 1,
        "objects": [
            {"object_id": 1, "prompts": [{"frame": 0, "box": [5, 5, 1, 1]}]},
            {"object_id": 2, "prompts": [{"frame": 0, "points": [[1, 2]], "labels": [3]}]},
        ],
    }
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", [line])))
    assert jobs == []
    assert sorted(r.field for r in rejects) == [
        "extra",
        "objects[0].prompts[0].box",
        "objects[1].prompts[0].labels[0]",
    ]
    assert {r.video for r in rejects} == {"/v.mp4"}


def test_duplicate_video_id_across_lines_keeps_the_first(tmp_path):
    first = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/a.mp4", video_id="same")
    second = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/b.mp4", video_id="same")
    implicit = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="/a.mp4")
    again = one_object({"frame": 1, "box": [0, 0, 5, 5]}, video="/a.mp4")
    jobs, rejects = read_manifest(
        str(write_jsonl(tmp_path / "m.jsonl", [first, second, implicit, again]))
    )
    assert [(job.video, job.location) for job in jobs] == [
        ("/a.mp4", "m.jsonl line 1"),
        ("/a.mp4", "m.jsonl line 3"),
    ]
    assert [(r.location, r.field) for r in rejects] == [
        ("m.jsonl line 2", "video_id"),
        ("m.jsonl line 4", "video_id"),
    ]
    assert "already used by m.jsonl line 1" in rejects[0].reason


def table_rows(video: str = "s3://bucket/clips/cups.mp4") -> list[dict]:
    """EXAMPLE as one prompt per row (typed values; CSV turns the nested ones into JSON text)."""
    return [
        {"video": video, "video_id": "cups", "object_id": 1, "frame": 0, "points": [[412.0, 300.0]], "labels": [1], "box": None, "mask_rle": None},
        {"video": video, "video_id": None, "object_id": 2, "frame": 0, "points": None, "labels": None, "box": [100.0, 120.0, 300.0, 400.0], "mask_rle": None},
        {"video": video, "video_id": None, "object_id": 3, "frame": 10, "points": None, "labels": None, "box": None, "mask_rle": MASK_RLE},
        {"video": video, "video_id": None, "object_id": 2, "frame": 50, "points": [[180.0, 260.0]], "labels": [0], "box": None, "mask_rle": None},
    ]  # fmt: skip


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            cells = []
            for column in columns:
                value = row.get(column)
                if value is None:
                    cells.append("")
                elif isinstance(value, (list, dict)):
                    cells.append(json.dumps(value))
                else:
                    cells.append(str(value))
            writer.writerow(cells)
    return path


def test_parquet_and_csv_tables_give_the_same_job_as_jsonl(tmp_path):
    rows = table_rows()
    typed = pa.Table.from_pylist(rows)  # list / struct columns
    pq.write_table(typed, tmp_path / "typed.parquet")
    as_text = pa.Table.from_pylist(
        [
            {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
            for r in rows
        ]
    )  # JSON text columns in Parquet are accepted too
    pq.write_table(as_text, tmp_path / "text.parquet")
    write_csv(tmp_path / "prompts.csv", rows)
    for name in ("typed.parquet", "text.parquet", "prompts.csv"):
        jobs, rejects = read_manifest(str(tmp_path / name))
        assert rejects == [], name
        assert len(jobs) == 1, name
        assert (jobs[0].video, jobs[0].video_id) == ("s3://bucket/clips/cups.mp4", "cups")
        assert jobs[0].objects == EXAMPLE_JOB_OBJECTS, name
        assert jobs[0].location == f"{name} row 1"


def test_table_problems_name_the_row_and_column_and_reject_only_that_video(tmp_path):
    rows = table_rows("/v/cups.mp4") + [
        {"video": "/v/other.mp4", "object_id": 1, "frame": 0, "box": [0, 0, 5, 5]},
        {"video": "/v/other.mp4", "object_id": 1, "frame": 3, "points": [[1, 1]], "labels": [1, 0]},
    ]
    rows[1] = {**rows[1], "box": [300.0, 120.0, 100.0, 400.0]}
    path = write_csv(tmp_path / "prompts.csv", rows, columns=list(table_rows()[0]))
    jobs, rejects = read_manifest(str(path))
    assert jobs == []
    assert [(r.location, r.field, r.video) for r in rejects] == [
        ("prompts.csv row 2", "box", "/v/cups.mp4"),
        ("prompts.csv row 6", "labels", "/v/other.mp4"),
    ]
    assert json.loads(rejects[0].raw)["box"] == "[300.0, 120.0, 100.0, 400.0]"

    rows = table_rows("/v/cups.mp4")
    rows[2] = {**rows[2], "object_id": "one"}
    rows.append({**rows[0], "video": "/v/fine.mp4", "video_id": "fine"})
    jobs, rejects = read_manifest(str(write_csv(tmp_path / "p2.csv", rows)))
    assert [job.video_id for job in jobs] == ["fine"]
    assert [(r.location, r.field) for r in rejects] == [("p2.csv row 3", "object_id")]


def test_csv_cell_problems(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "video,object_id,frame,points,labels\n"
        '/v/a.mp4,1,0,"[[1,2]",[1]\n'  # malformed JSON text
        "/v/b.mp4,1,x,,\n"  # frame not a number, and no prompt content
        "/v/c.mp4,1,0\n"  # too few cells
        "/v/d.mp4,1,0,[[1, 2]],[1]\n"
        '/v/d.mp4,2,0,"[[1, 2]]",[1]\n'
    )
    jobs, rejects = read_manifest(str(path))
    assert [(r.location, r.field) for r in rejects] == [
        ("p.csv row 1", "points"),
        ("p.csv row 2", "frame"),
        ("p.csv row 3", "row"),
        ("p.csv row 4", "row"),
    ]
    # row 4 has 6 cells (an unquoted comma): d.mp4 is rejected rather than labeled without it
    assert jobs == []
    assert rejects[3].video == "/v/d.mp4"


def test_table_conflicting_video_ids_and_repeated_frames(tmp_path):
    rows = [
        {"video": "/v/a.mp4", "video_id": "a", "object_id": 1, "frame": 0, "box": [0, 0, 2, 2]},
        {"video": "/v/a.mp4", "video_id": "b", "object_id": 2, "frame": 0, "box": [0, 0, 2, 2]},
        {"video": "/v/c.mp4", "video_id": None, "object_id": 1, "frame": 4, "box": [0, 0, 2, 2]},
        {"video": "/v/c.mp4", "video_id": None, "object_id": 1, "frame": 4, "box": [0, 0, 3, 3]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    jobs, rejects = read_manifest(str(tmp_path / "p.parquet"))
    assert jobs == []
    assert [(r.location, r.field) for r in rejects] == [
        ("p.parquet row 2", "video_id"),
        ("p.parquet row 4", "frame"),
    ]


def test_table_header_problems_raise(tmp_path):
    (tmp_path / "unknown.csv").write_text("video,object_id,frame,pts\n/v.mp4,1,0,[]\n")
    with pytest.raises(ValueError, match="unknown.csv.*'pts'"):
        read_manifest(str(tmp_path / "unknown.csv"))
    (tmp_path / "missing.csv").write_text("video,frame,box\n/v.mp4,0,[0,0,1,1]\n")
    with pytest.raises(ValueError, match="object_id"):
        read_manifest(str(tmp_path / "missing.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(ValueError, match="broken.parquet"):
        read_manifest(str(tmp_path / "broken.parquet"))


def test_missing_manifest_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        read_manifest(str(tmp_path / "nothere.jsonl"))
    (tmp_path / "m.txt").write_text("{}")
    with pytest.raises(ValueError, match="unknown extension"):
        read_manifest(str(tmp_path / "m.txt"))


def test_manifest_on_s3_resolves_relative_videos_in_its_bucket():
    with start_s3(buckets=["manifests"]) as s3:
        fs = s3.filesystem()
        line = one_object({"frame": 0, "points": [[3, 4]], "labels": [1]}, video="./clips/a.mp4")
        fs.pipe_file("manifests/runs/m.jsonl", (json.dumps(line) + "\nnot json\n").encode())
        jobs, rejects = read_manifest("s3://manifests/runs/m.jsonl", s3.storage_options)
        assert [job.video for job in jobs] == ["s3://manifests/runs/clips/a.mp4"]
        assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 2", "line")]
        with pytest.raises(FileNotFoundError, match="s3://manifests/runs/none.jsonl"):
            read_manifest("s3://manifests/runs/none.jsonl", s3.storage_options)


def test_json_file_may_hold_one_array_of_videos(tmp_path):
    good = one_object({"frame": 0, "box": [0, 0, 5, 5]}, video="./clips/../a.mp4")
    bad = one_object({"frame": 0, "box": [0, 0, 5]}, video="/b.mp4")
    (tmp_path / "m.json").write_text(json.dumps([good, bad], indent=2))
    jobs, rejects = read_manifest(str(tmp_path / "m.json"))
    assert [(job.video, job.location) for job in jobs] == [
        (str(tmp_path / "a.mp4"), "m.json item 1")
    ]
    assert [(r.location, r.field) for r in rejects] == [
        ("m.json item 2", "objects[0].prompts[0].box")
    ]


GOOD = one_object({"frame": 0, "box": [0, 0, 5, 5]})


def test_lines_nested_past_the_limit_are_one_reject_each_and_the_rest_runs(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit: was a RecursionError
    deep_but_parseable = json.dumps(
        one_object({"frame": 0, "box": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]})
    )
    lines = [GOOD, deep, deep_but_parseable, {**GOOD, "video": "/v/after.mp4"}]
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", lines)))
    assert [job.location for job in jobs] == ["m.jsonl line 1", "m.jsonl line 4"]
    assert [(r.location, r.field) for r in rejects] == [
        ("m.jsonl line 2", "line"),
        ("m.jsonl line 3", "line"),
    ]
    assert all("nested too deeply" in r.reason for r in rejects)


def test_csv_cells_nested_too_deeply_or_past_the_csv_field_limit_reject_only_their_row(tmp_path):
    path = tmp_path / "p.csv"
    deep = "[" * 60_000 + "]" * 60_000  # under csv's default 131072-character field limit
    huge = "[" + "1," * 70_000 + "1]"  # over it: a csv.Error, which used to end the run
    path.write_text(
        "video,object_id,frame,box,points,labels\n"
        '/v/a.mp4,1,0,"[0, 0, 5, 5]",,\n'
        f"/v/b.mp4,1,0,{deep},,\n"
        f'/v/c.mp4,1,0,"{huge}","[[1,\r\n 1]]",[1]\n'  # a quoted newline after the long cell
        '/v/d.mp4,1,0,,"[[1,\n 1]]",[1]\n'
    )
    jobs, rejects = read_manifest(str(path))
    assert [job.video for job in jobs] == ["/v/a.mp4", "/v/d.mp4"]
    assert [(r.location, r.field) for r in rejects] == [
        ("p.csv row 2", "box"),
        ("p.csv row 3", "box"),
    ]
    assert "nested too deeply" in rejects[0].reason and rejects[0].video == "/v/b.mp4"
    assert "four finite numbers" in rejects[1].reason and rejects[1].video == "/v/c.mp4"


def test_csv_integer_cells_too_long_to_convert_are_rejected(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(f'video,object_id,frame,box\n/v/a.mp4,{"9" * 5000},0,"[0, 0, 5, 5]"\n')
    jobs, rejects = read_manifest(str(path))
    assert jobs == [] and [(r.location, r.field) for r in rejects] == [("p.csv row 1", "object_id")]


def test_an_integer_past_pythons_digit_limit_is_a_reject_not_a_crash(tmp_path):
    line = json.dumps(GOOD).replace("[0, 0, 5, 5]", f"[0, 0, 5, {'9' * 5000}]")
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", [line, GOOD])))
    assert [job.location for job in jobs] == ["m.jsonl line 2"]
    assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 1", "line")]
    assert "unreadable JSON" in rejects[0].reason


def test_a_utf8_bom_does_not_reject_line_1(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    jobs, rejects = read_manifest(str(path))
    assert rejects == [] and [job.location for job in jobs] == ["m.jsonl line 1"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.jsonl", b""),
        ("m.jsonl", b"\n   \n\t\n"),
        ("m.jsonl", b"\xef\xbb\xbf\n"),
        ("m.json", b"[]"),
        ("m.json", b""),
        ("p.csv", b"video,object_id,frame,box\n"),
        ("p.csv", b""),
        ("p.csv", b"video,object_id,frame,box\n,,,\n\n"),
    ],
)
def test_an_empty_manifest_is_an_error_naming_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(EmptyManifestError, match=f"{name} is empty"):
        read_manifest(str(tmp_path / name))


def test_an_empty_parquet_manifest_is_an_error(tmp_path):
    schema = pa.schema([("video", pa.string()), ("object_id", pa.int64()), ("frame", pa.int64())])
    pq.write_table(schema.empty_table(), tmp_path / "p.parquet")
    with pytest.raises(EmptyManifestError, match="p.parquet is empty"):
        read_manifest(str(tmp_path / "p.parquet"))


def test_the_label_command_exits_1_on_an_empty_manifest(tmp_path, capsys):
    from jobs.__main__ import main

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n\n")
    assert main(["label", "--manifest", str(manifest), "--output", str(tmp_path / "out")]) == 1
    assert f"{manifest} is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_json_file_with_one_pretty_printed_object_is_one_video(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(EXAMPLE, indent=2))
    jobs, rejects = read_manifest(str(tmp_path / "m.json"))
    assert rejects == []
    assert [(job.video_id, job.objects, job.location) for job in jobs] == [
        ("cups", EXAMPLE_JOB_OBJECTS, "m.json")
    ]
    bad = one_object({"frame": 0, "box": [0, 0, 5]})
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=2))
    jobs, rejects = read_manifest(str(tmp_path / "bad.json"))
    assert jobs == []
    assert [(r.location, r.field) for r in rejects] == [("bad.json", "objects[0].prompts[0].box")]


def test_a_malformed_json_document_is_one_reject_naming_where(tmp_path):
    text = json.dumps([GOOD, GOOD], indent=2)
    (tmp_path / "m.json").write_text(text.replace("},", "}", 1))  # a missing comma
    jobs, rejects = read_manifest(str(tmp_path / "m.json"))
    assert jobs == []
    assert [(r.location, r.field) for r in rejects] == [("m.json", "file")]
    assert re.search(
        r"malformed JSON: Expecting ',' delimiter: line \d+ column \d+", rejects[0].reason
    )
    (tmp_path / "scalar.json").write_text("42")
    _, rejects = read_manifest(str(tmp_path / "scalar.json"))
    assert [(r.location, r.field) for r in rejects] == [("scalar.json", "line")]


def test_json_array_items_are_rejected_by_index(tmp_path):
    items = [GOOD, None, [1], {**GOOD, "video": "/v/b.mp4", "objects": "x"}]
    (tmp_path / "m.json").write_text(json.dumps(items, indent=1))
    jobs, rejects = read_manifest(str(tmp_path / "m.json"))
    assert [job.location for job in jobs] == ["m.json item 1"]
    assert [(r.location, r.field) for r in rejects] == [
        ("m.json item 2", "line"),
        ("m.json item 3", "line"),
        ("m.json item 4", "objects"),
    ]


def test_a_json_file_of_json_lines_is_still_read_line_by_line(tmp_path):
    lines = ["{broken", GOOD, {**GOOD, "video": "/v/b.mp4"}]
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.json", lines)))
    assert [job.location for job in jobs] == ["m.json line 2", "m.json line 3"]
    assert [(r.location, r.field) for r in rejects] == [("m.json line 1", "line")]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (Prompt(frame=0, points=((5000.0, -300.0),), labels=(1,)), "points[0] (5000, -300) is outside the 96 x 54 frame"),
        (Prompt(frame=0, points=((1.0, 1.0), (96.5, 3.0)), labels=(1, 0)), "points[1] (96.5, 3) is outside"),
        (Prompt(frame=0, box=(-1000.0, 5.0, -500.0, 50.0)), "box [-1000, 5, -500, 50] lies wholly outside the 96 x 54 frame"),
        (Prompt(frame=0, box=(10.0, 54.0, 20.0, 70.0)), "lies wholly outside"),
    ],
)  # fmt: skip
def test_prompts_outside_the_frame_are_refused_naming_the_field(prompt, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit_prompt_to_frame(prompt, height=54, width=96)


def test_prompts_inside_the_frame_pass_and_partly_outside_boxes_are_clipped():
    inside = Prompt(
        frame=0, points=((0.0, 0.0), (96.0, 54.0)), labels=(1, 0), box=(0.0, 0.0, 96.0, 54.0)
    )
    assert fit_prompt_to_frame(inside, height=54, width=96) is inside
    partly = Prompt(frame=3, box=(-20.0, 10.0, 40.0, 90.0))
    assert fit_prompt_to_frame(partly, height=54, width=96) == Prompt(
        frame=3, box=(0.0, 10.0, 40.0, 54.0)
    )
    mask = Prompt(frame=0, mask_rle=MASK_RLE)
    assert fit_prompt_to_frame(mask, height=54, width=96) is mask


def test_the_worker_fails_a_unit_whose_prompt_lies_outside_the_video_naming_line_object_prompt_and_field(
    tmp_path, videos_dir
):
    from pipeline.labeling import label_video
    from pipeline.retry import PERMANENT, classify

    video = str(videos_dir / "01_dog.mp4")
    line = {
        "video": video,
        "objects": [
            {"object_id": 1, "prompts": [{"frame": 0, "points": [[10, 10]], "labels": [1]}]},
            {"object_id": 2, "prompts": [{"frame": 0, "box": [-1000, 5, -500, 50]}]},
        ],
    }
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", [line])))
    assert rejects == []  # the frame size is unknown until the video is opened
    with pytest.raises(ValueError) as caught:
        label_video(None, jobs[0], run_id="r", model_name="m")  # fails before the model is used
    message = str(caught.value)
    assert message.startswith("m.jsonl line 1 (") and "01_dog.mp4" in message
    assert "object 2 prompts[0] (frame 0): box [-1000, 5, -500, 50] lies wholly outside" in message
    assert classify(caught.value) == PERMANENT
