"""Objects started by an open-vocabulary detector's boxes (pipeline.detectors): the real
OWLv2 and Grounding DINO classes of transformers on tiny random configs saved to a local
folder (loaded as a user's local weights; nothing is downloaded), their Detection records,
the run's detector options, and the detector path end to end through the worker and through
``jobs label`` on Ray."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from detector_helpers import save_tiny_grounding_dino, save_tiny_owlv2

from jobs.__main__ import main
from pipeline.detectors import (
    DEFAULT_THRESHOLDS,
    DEFAULT_WEIGHTS,
    Detection,
    DetectorSpec,
    detector_spec,
    load_detector,
    load_spec,
)
from pipeline.errors import InputError
from pipeline.manifest import read_manifest
from pipeline.plan import plan_units
from pipeline.synthetic_io import encode_mp4

LABELS = ("person", "dog")
H, W, FRAMES = 64, 96, 8


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    return {
        "owlv2": str(save_tiny_owlv2(folder / "owlv2")),
        "grounding-dino": str(save_tiny_grounding_dino(folder / "gdino")),
    }


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A short synthetic clip of two moving squares, and a blank one, written with PyAV."""
    folder = tmp_path_factory.mktemp("det-videos")
    frames = np.full((FRAMES, H, W, 3), 40, dtype=np.uint8)
    for t in range(FRAMES):
        frames[t, 10:34, 8 + 2 * t : 32 + 2 * t] = (220, 60, 60)
        frames[t, 30:58, 60 - t : 88 - t] = (60, 200, 90)
    (folder / "squares.mp4").write_bytes(encode_mp4(frames))
    (folder / "blank.mp4").write_bytes(encode_mp4(np.full((FRAMES, H, W, 3), 128, np.uint8)))
    return folder


def test_owlv2_detections_are_pixel_boxes_of_the_named_categories(weights, frame):
    detector = load_detector("owlv2", weights["owlv2"], "cpu", threshold=0.0)
    found = detector.detect(frame, LABELS)
    assert len(found) == 16  # one box per 16-px patch of the 64-px input
    assert all(isinstance(d, Detection) and d.category in LABELS for d in found)
    assert all(0.0 < d.score < 1.0 for d in found)
    # The zeroed box head leaves each patch's own box: a quarter of the padded 96-px square.
    sides = {(round(d.box[2] - d.box[0]), round(d.box[3] - d.box[1])) for d in found}
    assert sides == {(24, 24)}
    assert detector.detect(frame, LABELS) == found  # deterministic
    median = float(np.median([d.score for d in found]))
    strict = load_detector("owlv2", weights["owlv2"], "cpu", threshold=median)
    kept = strict.detect(frame, LABELS)
    assert kept and all(d.score > median for d in kept) and len(kept) < len(found)


def test_grounding_dino_detections_are_pixel_boxes_of_the_named_categories(weights, frame):
    detector = load_detector("grounding-dino", weights["grounding-dino"], "cpu", threshold=0.0)
    found = detector.detect(frame, LABELS)
    assert len(found) == 10  # one per query
    assert {d.category for d in found} <= set(LABELS)
    for d in found:
        x1, y1, x2, y2 = d.box
        assert -1e-3 <= x1 < x2 <= W + 1e-3 and -1e-3 <= y1 < y2 <= H + 1e-3
    assert detector.detect(frame, LABELS) == found


def test_detector_weights_at_a_folder_url_load_as_the_local_folder_does(weights, frame):
    from s3_server import start_s3

    with start_s3(buckets=["models"]) as s3:
        s3.filesystem().put(weights["owlv2"] + "/", "models/detectors/owlv2/", recursive=True)
        spec = detector_spec("owlv2", "dog", "s3://models/detectors/owlv2", 0.0)
        remote = load_spec(spec, "cpu", s3.storage_options)
        local = load_spec(dataclasses.replace(spec, weights=weights["owlv2"]), "cpu")
        assert remote.detect(frame, LABELS) == local.detect(frame, LABELS) != []
        # A folder URL that is not there is the input's fault, named without credentials.
        missing = dataclasses.replace(spec, weights="s3://models/detectors/none")
        with pytest.raises(InputError, match="s3://models/detectors/none: FileNotFoundError"):
            load_spec(missing, "cpu", s3.storage_options)
    secret = detector_spec("owlv2", "dog", "https://user:token@host/owlv2?X-Amz-Signature=abc")
    assert "token" not in secret.describe() and "Signature" not in secret.describe()


def test_detector_options_are_checked_before_any_work(tmp_path, capsys):
    assert detector_spec(None, None) is None
    spec = detector_spec("grounding-dino", " person, dog ,, person")
    assert spec == DetectorSpec(
        "grounding-dino",
        LABELS,
        DEFAULT_WEIGHTS["grounding-dino"],
        DEFAULT_THRESHOLDS["grounding-dino"],
    )
    for args, message in [
        (("yolo", "dog"), "not one of owlv2, grounding-dino"),
        ((None, "dog"), "--text needs --detector"),
        (("owlv2", " , "), "names no category"),
        (("owlv2", "dog", None, 1.5), "--detection-threshold must be in [0, 1]"),
        ((None, None, None, 0.3), "--detection-threshold needs --detector"),
        (("owlv2", "dog", "/no/such/owl"), "no such local folder, not a folder URL"),
    ]:
        with pytest.raises(ValueError) as caught:
            detector_spec(*args)
        assert message in str(caught.value)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": "v.mp4"}) + "\n")
    out = tmp_path / "out"
    for extra, message in [
        (["--text", "dog"], "error: --text needs --detector"),
        (["--detector", "owlv2", "--text", ","], "error: --text ',' names no category"),
    ]:
        assert main(["label", "--manifest", str(manifest), "--output", str(out), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message)
    assert not out.exists()
    # A local folder that holds no detector stops the run at once (not retried on workers).
    with pytest.raises(InputError, match="cannot load owlv2 weights from"):
        load_spec(detector_spec("owlv2", "dog", str(tmp_path)))
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["label", "--manifest", str(manifest), "--output", str(out), "--detector", "yolo"])


def test_unit_id_hashes_the_detector_settings(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": "v.mp4", "video_id": "v"}) + "\n")
    jobs, _ = read_manifest(str(manifest))
    ids = {jobs[0].video: "size=1"}

    def unit_id(spec):
        (unit,) = plan_units(jobs, "model", "digest", identities=ids, detector=spec)
        assert unit.job.detector == spec
        return unit.unit_id

    base = detector_spec("owlv2", "dog")
    assert unit_id(base) == unit_id(detector_spec("owlv2", "dog"))
    variants = [
        None,
        detector_spec("grounding-dino", "dog"),
        detector_spec("owlv2", "dog, cat"),
        detector_spec("owlv2", "dog", "someone/owlv2-finetuned"),
        detector_spec("owlv2", "dog", None, 0.5),
    ]
    assert len({unit_id(base), *(unit_id(v) for v in variants)}) == 1 + len(variants)
    # A line with its own automatic-mask settings keeps automatic masks.
    auto = dataclasses.replace(jobs[0], auto=(("points_per_side", 8),))
    (unit,) = plan_units([auto], "model", "digest", identities=ids, detector=base)
    assert unit.job.detector is None


def test_a_lines_text_names_its_own_categories_for_the_runs_detector(tmp_path):
    manifest = tmp_path / "m.jsonl"
    lines = [
        {"video": "v.mp4", "video_id": "v"},
        {"video": "v.mp4", "video_id": "v-cats", "text": " cat, ball ,cat"},
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs, rejects = read_manifest(str(manifest))
    assert rejects == [] and [job.text for job in jobs] == [(), ("cat", "ball")]
    spec = detector_spec("owlv2", "person, dog")
    ids = {job.video: "size=1" for job in jobs}
    units = plan_units(jobs, "m", "d", identities=ids, detector=spec)
    assert [u.job.detector.labels for u in units] == [("person", "dog"), ("cat", "ball")]
    assert units[1].job.detector == dataclasses.replace(spec, labels=("cat", "ball"))
    # The line's categories are part of what its unit labels: another text, another unit.
    other = dataclasses.replace(jobs[1], text=("dog",))
    (again,) = plan_units([other], "m", "d", identities=ids, detector=spec)
    assert again.unit_id != units[1].unit_id


@pytest.mark.parametrize(
    "extra, reason",
    [
        ({"text": 3}, "must be text"),
        ({"text": " , "}, "names no category"),
        ({"text": "cat\x00"}, "control"),
        ({"text": "cat", "auto": {"points_per_side": 8}}, "without objects, auto or detections"),
        ({"text": "cat", "detections": []}, "without objects, auto or detections"),
        (
            {
                "text": "cat",
                "objects": [
                    {"object_id": 1, "prompts": [{"frame": 0, "points": [[1, 2]], "labels": [1]}]}
                ],
            },
            "without objects, auto or detections",
        ),
    ],
)
def test_bad_text_on_a_line_is_a_reject_naming_it(tmp_path, extra, reason):
    manifest = tmp_path / "m.jsonl"
    lines = [{"video": "ok.mp4"}, {"video": "bad.mp4", **extra}]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs, rejects = read_manifest(str(manifest))
    assert [job.video.rsplit("/", 1)[-1] for job in jobs] == ["ok.mp4"]
    assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 2", "text")]
    assert reason in rejects[0].reason


@pytest.mark.parametrize(
    "line, detector, reason",
    [
        ({"video": "v.mp4", "text": "cat"}, [], "need a detector"),
        ({"video": "v.mp4"}, ["--detector", "owlv2"], "no categories for the detector"),
    ],
)
def test_categories_nobody_looks_for_or_nobody_gave_are_a_reject_naming_the_line(
    tmp_path, line, detector, reason
):
    import pyarrow.parquet as pq

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    out = tmp_path / "out"
    argv = [
        "label", "--manifest", str(manifest), "--output", str(out), "--model", "demo",
        "--workers", "1", "--no-progress", "--strict", *detector,
    ]  # fmt: skip
    assert main(argv) == 2
    (reject,) = pq.read_table(out / "rejects" / "rejects.parquet").to_pylist()
    assert (reject["location"], reject["field"]) == ("m.jsonl line 1", "text")
    assert reason in reject["reason"]


def test_a_detector_without_run_categories_labels_lines_that_name_their_own(tmp_path):
    from pipeline.plan import detector_category_rejects

    spec = detector_spec("owlv2", None)
    assert spec.labels == () and "categories per line" in spec.describe()
    manifest = tmp_path / "m.jsonl"
    lines = [
        {"video": "a.mp4", "text": "cat"},
        {"video": "b.mp4"},  # nothing to look for: rejected
        {"video": "c.mp4", "detections": []},  # its own detections: no detector needed
        {"video": "d.mp4", "auto": {"points_per_side": 8}},  # its own automatic masks
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs, _ = read_manifest(str(manifest))
    kept, rejects = detector_category_rejects(jobs, spec)
    assert [j.video.rsplit("/", 1)[-1] for j in kept] == ["a.mp4", "c.mp4", "d.mp4"]
    assert [(r.location, r.field) for r in rejects] == [("m.jsonl line 2", "text")]
    (unit, *_) = plan_units(kept, "m", "d", identities={j.video: "x" for j in kept}, detector=spec)
    assert unit.job.detector.labels == ("cat",)
    assert detector_category_rejects(jobs, detector_spec("owlv2", "dog")) == (list(jobs), [])


@pytest.mark.slow
def test_grounding_dino_through_the_worker_loaded_once_for_every_video(
    weights, videos, tmp_path, monkeypatch, one_torch_thread
):
    import pipeline.worker as worker_module
    from pipeline.sink import OutputStore, read_masks
    from pipeline.worker import LabelWorker, WorkerConfig
    from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH
    from sam2_core.hub import sha256_file

    loads = []
    real = worker_module.load_spec
    monkeypatch.setattr(worker_module, "load_spec", lambda *a: loads.append(a) or real(*a))
    spec = detector_spec("grounding-dino", "person, dog", weights["grounding-dino"], 0.5)
    manifest = videos / "w.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"video": v, "video_id": v[:-4]}) + "\n"
            for v in ("squares.mp4", "blank.mp4")
        )
    )
    jobs, _ = read_manifest(str(manifest))
    units = plan_units(
        jobs, "demo", "d", identities={j.video: "x" for j in jobs}, discover_every=4, detector=spec
    )
    out = str(tmp_path / "out")
    worker = LabelWorker(
        WorkerConfig(
            model=str(DEMO_CONFIG_PATH),
            checkpoint=str(DEMO_CHECKPOINT_PATH),
            checkpoint_digest=sha256_file(str(DEMO_CHECKPOINT_PATH)),
            output=out,
            run_id="r",
            model_name="demo",
            detector=spec,
        )
    )
    assert worker.ready().error is None
    assert worker.ready().settings.detector == spec.describe()
    results = [worker.run(unit) for unit in units]
    assert len(loads) == 1  # loaded once, when the worker started
    assert all(r.objects > 0 for r in results)  # the random detector boxes something everywhere
    assert len(OutputStore(out).committed_units()) == 2
    table = read_masks(out)
    assert (
        table.num_rows == sum(r.rows for r in results) == sum(r.objects for r in results) * FRAMES
    )


@pytest.mark.slow
def test_owlv2_end_to_end_through_jobs_label_on_ray(ray_local, weights, videos, tmp_path, capsys):
    from pipeline.labeling import label_jobs
    from pipeline.records import RunSummary
    from pipeline.sink import OutputStore, read_masks
    from sam2_core import build_model
    from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH

    manifest = videos / "m.jsonl"
    manifest.write_text(
        json.dumps({"video": "squares.mp4", "video_id": "squares"})
        + "\n"
        + json.dumps({"video": "blank.mp4", "video_id": "blank", "detections": []})
        + "\n"
        + json.dumps({"video": "squares.mp4", "video_id": "squares-cats", "text": "cat"})
        + "\n"
    )
    out = tmp_path / "out"
    argv = [
        "label", "--manifest", str(manifest), "--output", str(out), "--model", "demo",
        "--workers", "1", "--torch-threads", "1", "--run-id", "run", "--no-progress",
        "--discover-every", "4", "--detector", "owlv2", "--text", "person, dog",
        "--detector-weights", weights["owlv2"], "--detection-threshold", "0.5",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    summary = RunSummary.from_json((out / "summary.json").read_bytes())
    assert (summary.units, summary.units_done, summary.failed) == (3, 3, 0)
    (settings,) = summary.worker_settings
    assert settings.detector.startswith(f"owlv2 {weights['owlv2']} (person, dog; threshold 0.5)")
    assert len(OutputStore(str(out)).committed_units()) == 3  # the empty video too
    table = read_masks(str(out))
    assert set(table.column("video_id").to_pylist()) == {"squares", "squares-cats"}
    assert set(table.column("source").to_pylist()) == {"detector"}
    categories = {}
    for video_id, category in zip(*(table.column(c).to_pylist() for c in ("video_id", "category"))):
        categories.setdefault(video_id, set()).add(category)
    # Each video's boxes are of the categories its line asked for (the run's --text by default).
    assert categories["squares"] <= {"person", "dog"} and categories["squares-cats"] == {"cat"}
    assert all(0.5 <= s <= 1.0 for s in table.column("detection_score").to_pylist())
    # The same rows as one process labeling the same planned jobs (the detector loaded there).
    jobs, _ = read_manifest(str(manifest))
    spec = detector_spec("owlv2", "person, dog", weights["owlv2"], 0.5)
    units = plan_units(
        jobs, "m", None, identities={j.video: "x" for j in jobs}, discover_every=4, detector=spec
    )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(str(DEMO_CONFIG_PATH), checkpoint=str(DEMO_CHECKPOINT_PATH))
        expected = label_jobs(model, [u.job for u in units], run_id="run", model_name=summary.model)
    finally:
        torch.set_num_threads(threads)
    assert expected.num_rows > 0
    keys = [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    assert table.sort_by(keys).select(expected.schema.names).equals(expected)
