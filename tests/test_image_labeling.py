"""Image datasets through the pipeline: image lines (points, boxes, masks, automatic masks, a
folder of images) labeled on local Ray equal the single-process result; resume, rejects and
permanent failures as for videos; SAM 1 models label images too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from labeling_helpers import (
    RUN_ID,
    assert_same_rows,
    ellipse_rle,
    mini_files,
    run_config,
    sorted_masks,
    write_jsonl,
)
from PIL import Image

from pipeline.coordinator import describe_model, run_labeling
from pipeline.errors import InputError
from pipeline.image_labeling import label_images
from pipeline.images import read_image
from pipeline.manifest import read_manifest
from pipeline.plan import WHOLE_IMAGE, plan_units
from pipeline.video_identity import video_identities

AUTO = {"points_per_side": 4, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.5}
H, W = 96, 128


def shapes_image(seed: int) -> np.ndarray:
    """A small synthetic scene: a dark textured background and two coloured shapes."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 30, np.uint8)
    x, y = 10 + 8 * seed, 12 + 4 * seed
    img[y : y + 40, x : x + 50] = (220, 80, 40)
    yy, xx = np.mgrid[0:H, 0:W]
    img[((xx - 100) / 18) ** 2 + ((yy - 65) / 22) ** 2 <= 1] = (40, 200, 90)
    return np.clip(img + rng.integers(0, 25, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_inputs(tmp_path_factory) -> Path:
    """Images written as PNG and JPEG, a folder of two more, and a manifest over them."""
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(shapes_image(0)).save(folder / "points.png")
    Image.fromarray(shapes_image(1)).save(folder / "box.jpg", quality=95)
    Image.fromarray(shapes_image(2)).save(folder / "mask.png")
    Image.fromarray(shapes_image(3)).save(folder / "auto.png")
    (folder / "set" / "sub").mkdir(parents=True)
    Image.fromarray(shapes_image(4)).save(folder / "set" / "b.png")
    Image.fromarray(shapes_image(5)).save(folder / "set" / "sub" / "a.jpg")
    (folder / "set" / "notes.txt").write_text("not an image")
    return folder


def image_entries() -> list:
    return [
        {
            "image": "points.png",
            "image_id": "points",
            "objects": [
                {"object_id": 1, "prompts": [{"points": [[35, 30]], "labels": [1]}]},
                {
                    "object_id": 2,
                    "prompts": [{"frame": 0, "points": [[100, 65], [35, 30]], "labels": [1, 0]}],
                },
            ],
        },
        {
            "image": "box.jpg",
            "objects": [{"object_id": 5, "prompts": [{"box": [15, 14, 70, 60]}]}],
        },
        {
            "image": "mask.png",
            "image_id": "mask",
            "objects": [
                {"object_id": 1, "prompts": [{"mask": ellipse_rle(H, W, 100, 65, 18, 22)}]}
            ],
        },
        {"image": "auto.png", "image_id": "auto", "auto": AUTO},
        {"image": "set/", "auto": AUTO},
    ]


def reference(mini_a_dir: Path, manifest: Path, images_per_unit: int) -> pa.Table:
    """The single-process result: the same units labeled one after another in this process."""
    import torch

    from sam2_core import build_model
    from sam2_core.hub import sha256_file

    model_arg, checkpoint = mini_files(mini_a_dir)
    jobs, _ = read_manifest(str(manifest))
    identities = video_identities([j.video for j in jobs])
    units = plan_units(jobs, "m", None, identities=identities, images_per_unit=images_per_unit)
    name = f"{describe_model(model_arg)[0]}@{sha256_file(checkpoint)[:12]}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(model_arg, checkpoint=checkpoint)
        tables = [label_images(model, u.job, run_id=RUN_ID, model_name=name)[0] for u in units]
    finally:
        torch.set_num_threads(threads)
    return pa.concat_tables(tables).sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


# ---------------------------------------------------------------- manifest and plan


def test_image_lines_read_into_jobs_and_a_folder_into_one_job_per_image(image_inputs) -> None:
    manifest = write_jsonl(image_inputs / "m.jsonl", image_entries())
    jobs, rejects = read_manifest(str(manifest))
    assert rejects == []
    assert all(j.image for j in jobs)
    names = [Path(j.video).relative_to(image_inputs).as_posix() for j in jobs]
    assert names == ["points.png", "box.jpg", "mask.png", "auto.png", "set/b.png", "set/sub/a.jpg"]
    assert [j.video_id for j in jobs][:1] == ["points"]
    assert jobs[1].video_id.startswith("box.jpg-")  # the manifest's id rule, as for videos
    assert {p.frame for j in jobs for o in j.objects for p in o.prompts} == {0}
    assert jobs[4].objects == () and dict(jobs[4].auto) == AUTO


def test_bad_image_lines_are_rejected_naming_line_and_field(image_inputs) -> None:
    points = [{"object_id": 1, "prompts": [{"points": [[5, 5]], "labels": [1]}]}]
    manifest = write_jsonl(
        image_inputs / "bad.jsonl",
        [
            {
                "image": "points.png",
                "objects": [{"object_id": 1, "prompts": [{"frame": 3, "box": [1, 1, 9, 9]}]}],
            },
            {"image": "box.jpg", "objects": [{"object_id": 1, "prompts": [{"points": [[5, 5]]}]}]},
            {"image": "set/", "objects": points},
            {"image": "missing/"},
            {"image": "auto.png", "auto": {"points_per_side": 0}},
            {"image": "auto.png", "image_id": "g", "auto": {"grid": 3}},
            {"image": "mask.png", "objects": points, "auto": AUTO},
            {"image": "mask.png", "image_id": "m", "video_id": "x"},
        ],
    )
    jobs, rejects = read_manifest(str(manifest))
    assert jobs == []
    found = {(r.location, r.field) for r in rejects}
    assert found == {
        ("bad.jsonl line 1", "objects[0].prompts[0].frame"),
        ("bad.jsonl line 2", "objects[0].prompts[0].labels"),
        ("bad.jsonl line 3", "objects"),
        ("bad.jsonl line 4", "image"),
        ("bad.jsonl line 5", "auto"),
        ("bad.jsonl line 6", "auto.grid"),
        ("bad.jsonl line 7", "auto"),
        ("bad.jsonl line 8", "video_id"),
    }
    reasons = {r.location: r.reason for r in rejects}
    assert "frame 0 only" in reasons["bad.jsonl line 1"]
    assert "points_per_side" in reasons["bad.jsonl line 5"]


def test_image_units_batch_images_and_their_ids_follow_files_prompts_and_settings(
    image_inputs,
) -> None:
    manifest = write_jsonl(image_inputs / "m.jsonl", image_entries())
    jobs, _ = read_manifest(str(manifest))
    ids = video_identities([j.video for j in jobs])
    units = plan_units(jobs, "m", "digest", identities=ids, images_per_unit=4)
    assert [len(u.images) for u in units] == [4, 2]
    assert units[0].object_ids == (WHOLE_IMAGE,)
    assert units[1].claim_keys == tuple((j.video_id, WHOLE_IMAGE) for j in jobs[4:])
    again = plan_units(jobs, "m", "digest", identities=ids, images_per_unit=4)
    assert [u.unit_id for u in again] == [u.unit_id for u in units]
    other_model = plan_units(jobs, "m2", "digest", identities=ids, images_per_unit=4)
    assert not {u.unit_id for u in other_model} & {u.unit_id for u in units}
    replaced = dict(ids, **{jobs[5].video: "size=1 mtime=2"})
    changed = plan_units(jobs, "m", "digest", identities=replaced, images_per_unit=4)
    assert changed[0].unit_id == units[0].unit_id and changed[1].unit_id != units[1].unit_id
    entries = image_entries()
    entries[4]["auto"] = dict(AUTO, points_per_side=5)
    jobs2, _ = read_manifest(str(write_jsonl(image_inputs / "m2.jsonl", entries)))
    settings = plan_units(jobs2, "m", "digest", identities=ids, images_per_unit=4)
    assert settings[0].unit_id == units[0].unit_id and settings[1].unit_id != units[1].unit_id


def test_images_are_read_as_stored_ignoring_exif_orientation(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(shapes_image(0)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(str(tmp_path / "rotated.jpg")).shape == (H, W, 3)


def test_an_undecodable_image_raises_input_error_naming_the_file(tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="broken.png"):
        read_image(str(tmp_path / "broken.png"))
    with pytest.raises(InputError, match="gone.jpg"):
        read_image(str(tmp_path / "gone.jpg"))


# ---------------------------------------------------------------- labeling in one process


def test_automatic_masks_get_ids_by_area_and_the_same_table_every_time(image_inputs, mini) -> None:
    manifest = write_jsonl(
        image_inputs / "auto.jsonl",
        [
            {
                "image": "auto.png",
                "image_id": "auto",
                "auto": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
            }
        ],
    )
    jobs, _ = read_manifest(str(manifest))
    units = plan_units(jobs, "m", None, identities=video_identities([jobs[0].video]))
    first, stats = label_images(mini, units[0].job, run_id="r", model_name="m")
    second, _ = label_images(mini, units[0].job, run_id="r", model_name="m")
    assert first.equals(second)
    ids, areas = first.column("object_id").to_pylist(), first.column("area").to_pylist()
    assert len(ids) >= 2 and ids == list(range(1, len(ids) + 1))
    assert areas == sorted(areas, reverse=True)
    assert set(first.column("frame_index").to_pylist()) == {0}
    assert not any(first.column("prompted").to_pylist())
    assert stats.frames == 1 and stats.rows == len(ids)


def test_image_rows_carry_source_category_and_object_score(image_inputs, mini) -> None:
    entries = image_entries()[:4]
    entries[0]["objects"][0]["category"] = "disc"
    entries[3]["auto"] = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    jobs, _ = read_manifest(str(write_jsonl(image_inputs / "origins.jsonl", entries)))
    units = plan_units(jobs, "m", None, identities=video_identities([j.video for j in jobs]))
    table, _ = label_images(mini, units[0].job, run_id="r", model_name="m")
    rows = {
        (r["video_id"], r["object_id"]): r
        for r in table.select(
            ["video_id", "object_id", "present", "object_score_logit", "source", "category"]
        ).to_pylist()
    }
    assert rows[("points", 1)]["category"] == "disc" and rows[("points", 2)]["category"] is None
    prompted = [r for (video, _), r in rows.items() if video != "auto"]
    automatic = [r for (video, _), r in rows.items() if video == "auto"]
    assert len(prompted) == 4 and automatic
    assert {r["source"] for r in prompted} == {"prompt"}
    assert all((r["object_score_logit"] > 0) == r["present"] for r in prompted)
    assert rows[("mask", 1)]["object_score_logit"] == 10.0  # a drawn mask: SAM 2's +10
    assert {r["source"] for r in automatic} == {"auto"}
    assert all(r["object_score_logit"] is None for r in automatic)  # the generator has none


def test_sam1_models_label_prompted_and_automatic_images(image_inputs) -> None:
    import torch

    from sam2_core import SAM1Model, build_model, build_sam1
    from sam2_core.sam1 import SAM1Config, ViTConfig

    assert isinstance(build_model("sam_vit_b"), SAM1Model)  # the worker's one way in
    torch.manual_seed(0)
    tiny = SAM1Config(
        "sam_vit_tiny_test",
        ViTConfig(64, 2, 4, (1,), window_size=7, pretrain_image_size=256),
        image_size=256,
    )
    model = build_sam1(tiny)
    entries = image_entries()[:2] + [
        {"image": "auto.png", "auto": dict(AUTO, pred_iou_thresh=0.0, stability_score_thresh=0.0)}
    ]
    jobs, _ = read_manifest(str(write_jsonl(image_inputs / "sam1.jsonl", entries)))
    units = plan_units(jobs, "m", None, identities=video_identities([j.video for j in jobs]))
    table, _ = label_images(model, units[0].job, run_id="r", model_name="sam1")
    keys = list(zip(table.column("video_id").to_pylist(), table.column("object_id").to_pylist()))
    assert {("points", 1), ("points", 2), (jobs[1].video_id, 5)} <= set(keys)
    assert any(v == jobs[2].video_id for v, _ in keys)  # automatic masks with a SAM 1 model


# ---------------------------------------------------------------- on local Ray


@pytest.mark.slow
def test_image_manifest_on_ray_equals_single_process_resumes_and_rejects(
    ray_local, image_inputs, mini_a_dir, tmp_path
) -> None:
    bad = {
        "image": "auto.png",
        "image_id": "bad",
        "objects": [{"object_id": 1, "prompts": [{"frame": 1, "box": [1, 1, 9, 9]}]}],
    }
    manifest = write_jsonl(tmp_path / "m.jsonl", [*image_entries(), bad])
    for name in ("points.png", "box.jpg", "mask.png", "auto.png", "set"):  # beside the manifest
        copy = shutil.copytree if (image_inputs / name).is_dir() else shutil.copyfile
        copy(image_inputs / name, tmp_path / name)
    expected = reference(mini_a_dir, manifest, images_per_unit=2)
    out = tmp_path / "out"
    result = run_labeling(run_config(manifest, out, mini_a_dir, images_per_unit=2))
    assert result.exit_code == 2 and result.failures == []
    assert [(r.location, r.field) for r in result.rejects] == [
        ("m.jsonl line 6", "objects[0].prompts[0].frame")
    ]
    s = result.summary
    assert (s.units, s.units_done, s.failed, s.rejected, s.frames) == (3, 3, 0, 1, 6)
    table = sorted_masks(out)
    assert_same_rows(table, expected)
    assert set(table.column("frame_index").to_pylist()) == {0}
    prompted = {
        (v, o)
        for v, o, p in zip(
            *(table.column(c).to_pylist() for c in ("video_id", "object_id", "prompted"))
        )
        if p
    }
    jobs, _ = read_manifest(str(manifest))
    assert prompted == {("points", 1), ("points", 2), (jobs[1].video_id, 5), ("mask", 1)}
    auto_ids = set(table.column("video_id").to_pylist()) - {"points", jobs[1].video_id, "mask"}
    assert auto_ids == {"auto", jobs[4].video_id, jobs[5].video_id}

    again = run_labeling(run_config(manifest, out, mini_a_dir, images_per_unit=2))
    assert (again.summary.skipped, again.summary.units_done) == (3, 0)
    assert_same_rows(sorted_masks(out), expected)


@pytest.mark.slow
def test_undecodable_image_and_prompt_outside_fail_for_good_naming_file_and_field(
    ray_local, image_inputs, mini_a_dir, tmp_path
) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for name in ("points.png", "box.jpg"):
        (tmp_path / name).write_bytes((image_inputs / name).read_bytes())
    outside = {"object_id": 1, "prompts": [{"points": [[500, 10]], "labels": [1]}]}
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "points.png", "image_id": "ok", "auto": AUTO},
            {"image": "broken.png", "image_id": "broken", "auto": AUTO},
            {"image": "box.jpg", "image_id": "outside", "objects": [outside]},
        ],
    )
    result = run_labeling(run_config(manifest, tmp_path / "out", mini_a_dir, images_per_unit=1))
    assert result.exit_code == 2
    failures = {f.video_id: f for f in result.failures}
    assert set(failures) == {"broken", "outside"}
    for failure in failures.values():
        assert (
            failure.attempts == 1 and not failure.transient and failure.error_type == "InputError"
        )
    assert (
        "broken.png" in failures["broken"].reason and "cannot decode" in failures["broken"].reason
    )
    assert "m.jsonl line 3" in failures["outside"].reason
    assert "points[0] (500, 10) is outside the 128 x 96 frame" in failures["outside"].reason
    assert set(sorted_masks(tmp_path / "out").column("video_id").to_pylist()) == {"ok"}
