"""Object categories and origins: the manifest's ``category``, the mask table's origin columns
(source, category, detection score, object-score logit), and tables written before them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_manifest import table_rows, write_csv, write_jsonl

from pipeline.manifest import read_manifest
from pipeline.masks import MASK_SCHEMA, ObjectOrigin, encode_mask, mask_row, mask_table
from pipeline.plan import plan_units
from pipeline.sink import OutputStore, read_masks

OLD_SCHEMA = pa.schema(list(MASK_SCHEMA)[:13])  # the 13 columns before the origin columns


def prompted(video: str, object_id: int, **extra) -> dict:
    prompt = {"frame": 0, "points": [[10, 10]], "labels": [1]}
    return {"video": video, "objects": [{"object_id": object_id, "prompts": [prompt], **extra}]}


# ---------------------------------------------------------------- manifest


def test_every_manifest_form_carries_an_object_category(tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [prompted("/v/a.mp4", 1, category="cup")])
    (tmp_path / "m.json").write_text(json.dumps([prompted("/v/a.mp4", 1, category="cup")]))
    rows = table_rows()
    rows[0]["category"] = "cup"  # object 2 has two rows: one names its category, one leaves it
    rows[3]["category"] = "saucer"
    for row in rows[1:3]:
        row["category"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    write_csv(tmp_path / "p.csv", rows)
    for name in ("m.jsonl", "m.json"):
        jobs, rejects = read_manifest(str(tmp_path / name))
        assert rejects == [] and jobs[0].objects[0].category == "cup", name
    for name in ("p.parquet", "p.csv"):
        jobs, rejects = read_manifest(str(tmp_path / name))
        assert rejects == [], name
        assert [(o.object_id, o.category) for o in jobs[0].objects] == [
            (1, "cup"),
            (2, "saucer"),
            (3, None),
        ], name


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "non-empty string"),
        ("   ", "non-empty string"),
        (" cup", "without surrounding spaces"),
        (7, "non-empty string"),
        (["cup"], "non-empty string"),
        ("x" * 201, "at most 200 characters"),
        ("cup\nmug", "control characters"),
        ("cup\x7fmug", "control characters"),
    ],
)
def test_bad_categories_are_rejected_naming_the_line_and_field(tmp_path, value, reason):
    lines = [prompted("/v/ok.mp4", 1, category="cup"), prompted("/v/bad.mp4", 1, category=value)]
    jobs, rejects = read_manifest(str(write_jsonl(tmp_path / "m.jsonl", lines)))
    assert [job.video for job in jobs] == ["/v/ok.mp4"]
    assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 2", "objects[0].category")]
    assert reason in rejects[0].reason


def test_table_categories_are_checked_per_row_and_may_not_differ_within_an_object(tmp_path):
    rows = table_rows("/v/cups.mp4")
    rows[1]["category"] = "saucer"
    rows[3]["category"] = "plate"  # object 2 again, another category
    rows.append({**table_rows("/v/bad.mp4")[0], "video_id": "bad", "category": "a\tb"})
    columns = [*table_rows()[0], "category"]
    jobs, rejects = read_manifest(str(write_csv(tmp_path / "p.csv", rows, columns)))
    assert jobs == []
    assert [(r.location, r.field) for r in rejects] == [
        ("p.csv row 4", "category"),
        ("p.csv row 5", "category"),
    ]
    assert "differs from 'saucer'" in rejects[0].reason
    assert "control characters" in rejects[1].reason


def test_a_category_changes_the_unit_id_and_no_category_keeps_it(tmp_path):
    plain = prompted("/v/a.mp4", 1)
    named = prompted("/v/a.mp4", 1, category="cup")
    other = prompted("/v/a.mp4", 1, category="mug")
    ids = []
    for index, line in enumerate((plain, named, other)):
        jobs, _ = read_manifest(str(write_jsonl(tmp_path / f"m{index}.jsonl", [line])))
        (unit,) = plan_units(jobs, "m", None, identities={"/v/a.mp4": "size=1"})
        ids.append(unit.unit_id)
    assert len(set(ids)) == 3


# ---------------------------------------------------------------- rows and tables


def test_rows_carry_the_logit_and_the_origin_of_their_object():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    origin = ObjectOrigin(source="detector", category="dog", detection_score=0.75)
    row = mask_row(
        "v", 3, 0, mask, score=0.9, present=True, prompted=True, run_id="r", model="m",
        object_score_logit=np.float32(2.5), origin=origin,
    )  # fmt: skip
    table = mask_table([row, mask_row("v", 4, 0, mask, score=0.9, present=True, prompted=True,
                                      run_id="r", model="m")])  # fmt: skip
    assert table.schema.equals(MASK_SCHEMA)
    columns = ["object_score_logit", "source", "category", "detection_score"]
    assert table.select(columns).to_pylist() == [
        {"object_score_logit": 2.5, "source": "detector", "category": "dog",
         "detection_score": 0.75},
        {"object_score_logit": None, "source": "prompt", "category": None,
         "detection_score": None},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="source must be one of"):
        ObjectOrigin(source="person")


def old_schema_table(video_id: str, object_id: int, frames: int) -> pa.Table:
    """Rows as a run before the origin columns wrote them (13 columns)."""
    mask = np.zeros((6, 8), bool)
    mask[2:5, 1:6] = True
    counts, area, bbox = encode_mask(mask)
    rows = [
        {"video_id": video_id, "object_id": object_id, "frame_index": t, "height": 6, "width": 8,
         "rle": counts, "area": area, "bbox": list(bbox), "score": 0.9, "present": True,
         "prompted": t == 0, "run_id": "old", "model": "m"}
        for t in range(frames)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=OLD_SCHEMA)


def write_old_unit(store: OutputStore, unit_id: str, table: pa.Table) -> None:
    """A unit committed by an older labeler: its data file holds the old schema."""
    store.commit_unit(unit_id, mask_table([]), {})  # the commit record and a file to replace
    pq.write_table(table, store.data_path(unit_id))


def test_tables_written_before_the_origin_columns_read_with_them_filled(tmp_path):
    from pipeline.evaluate import evaluate_uris
    from pipeline.exports import RunReader, export_run
    from pipeline.review import rank_run

    run = str(tmp_path / "run")
    store = OutputStore(run)
    write_old_unit(store, "old-a", old_schema_table("a", 1, 3))
    mask = np.zeros((6, 8), bool)
    mask[0:2, 0:2] = True
    new_rows = [
        mask_row("b", 1, t, mask, score=0.8, present=True, prompted=t == 0, run_id="new",
                 model="m", object_score_logit=4.0, origin=ObjectOrigin(category="cup"))
        for t in range(2)
    ]  # fmt: skip
    store.commit_unit("new-b", mask_table(new_rows), {})

    table = read_masks(run)
    assert table.schema.equals(MASK_SCHEMA) and table.num_rows == 5
    old = table.filter(pa.compute.equal(table.column("video_id"), "a"))
    assert set(old.column("source").to_pylist()) == {"prompt"}
    assert old.column("category").null_count == old.column("object_score_logit").null_count == 3
    new = table.filter(pa.compute.equal(table.column("video_id"), "b"))
    assert new.column("category").to_pylist() == ["cup", "cup"]

    reader = RunReader(run)
    assert reader.video("a").table.column("source").to_pylist() == ["prompt"] * 3
    assert reader.categories() == ["cup"]
    assert rank_run(run).num_rows >= 0  # reads every video without failing
    result = export_run(run, "coco", str(tmp_path / "coco"))
    assert result.items == 5
    pq.write_table(old_schema_table("a", 1, 3), tmp_path / "truth.parquet")
    report = evaluate_uris(run, str(tmp_path / "truth.parquet"))
    assert report.j == pytest.approx(1.0)


def test_exports_that_name_classes_use_the_category(tmp_path):
    import xml.etree.ElementTree as ET

    from export_checks import commit, synthetic_units

    from pipeline.exports import export_run

    run = str(tmp_path / "run")
    commit(run, synthetic_units())  # vid-b object 2 is an "ellipse"; the rest have no category
    export_run(run, "youtube-vis", str(tmp_path / "ytvis"))
    document = json.loads((tmp_path / "ytvis" / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    videos = {v["id"]: v["name"] for v in document["videos"]}
    assert {
        (videos[a["video_id"]], a["object_id"]): names[a["category_id"]]
        for a in document["annotations"]
    } == {("vid-a", 1): "object", ("vid-a", 7): "object", ("vid-b", 2): "ellipse",
          ("vid-b", 3): "object"}  # fmt: skip

    export_run(run, "cvat", str(tmp_path / "cvat"))
    root = ET.parse(tmp_path / "cvat" / "vid-b" / "annotations.xml").getroot()
    assert [label.find("name").text for label in root.iter("label")] == ["object", "ellipse"]
    tracks = {t.find("mask/attribute").text: t.get("label") for t in root.iter("track")}
    assert tracks == {"2": "ellipse", "3": "object"}

    export_run(run, "label-studio", str(tmp_path / "ls"))
    config = ET.parse(tmp_path / "ls" / "label_config.xml").getroot()
    assert [label.get("value") for label in config.iter("Label")] == ["object", "ellipse"]
    tasks = json.loads((tmp_path / "ls" / "tasks" / "vid-b.json").read_text())
    brushes = {
        r["id"]: r["value"]["brushlabels"] for t in tasks for r in t["predictions"][0]["result"]
    }
    assert brushes == {"object-2": ["ellipse"], "object-3": ["object"]}
