"""Training on users' data: a label run's output and DAVIS-style folders as ground truth,
held-out J&F with the best checkpoint kept, background loading, and bad input named clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import tiny_tree

import sam2_core
from jobs.__main__ import main as jobs_main
from pipeline.exports.davis import paint_frame, png_bytes
from pipeline.training.data import DataSpec, load_training_data, parse_data_spec
from pipeline.training.videos import TableClips
from sam2_core.synthetic import SyntheticConfig, generate_video
from sam2_core.training import BackgroundBatches, BatchPlan, SyntheticClips, step_batches

SYNTH = SyntheticConfig(height=64, width=64, num_frames=8, min_objects=1, max_objects=2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_davis(root, seeds, frame_size=None, skip_png=None):
    """DAVIS layout from synthetic videos: JPEGImages/<v>/00000.jpg, Annotations/<v>/00000.png."""
    for seed in seeds:
        video = generate_video(seed, SYNTH)
        name = f"vid{seed}"
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for t, frame in enumerate(video.frames):
            image = Image.fromarray(frame)
            if frame_size:
                image = image.resize(frame_size)
            image.save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=95)
            if skip_png == (name, t):
                continue
            masks = [(i + 1, None, video.masks[i, t]) for i in range(len(video.object_ids))]
            (root / "Annotations" / name / f"{t:05d}.png").write_bytes(
                png_bytes(paint_frame(64, 64, masks))
            )
    return root


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"resolved": tiny_tree()}))
    return path


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_fine_tuning_on_a_davis_folder_lowers_the_loss_keeps_the_best_and_loads_strictly(
    tmp_path, tiny_config, capsys
):
    davis = write_davis(tmp_path / "davis", [1, 2])
    out = tmp_path / "out"
    argv = [
        "train",
        "--config",
        str(tiny_config),
        "--data",
        f"davis:{davis}",
        "--output",
        str(out),
        "--steps",
        "40",
        "--batch-size",
        "2",
        "--clip-len",
        "2",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--log-every",
        "5",
        "--checkpoint-every",
        "20",
        "--eval-videos",
        "1",
        "--max-objects",
        "2",
        "--box-prob",
        "0",
        "--mask-prob",
        "0",
        "--max-corrections",
        "0",
        "--correct-later-prob",
        "0",
    ]
    assert jobs_main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 training video(s); held out: vid" in printed and "held-out J&F=" in printed
    losses = _losses(out)
    assert np.isfinite(losses).all() and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    scores = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [s["step"] for s in scores] == [20, 40]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["J&F"] == max(s["J&F"] for s in scores)
    record = json.loads((out / "config.json").read_text())["training"]
    assert record["data"] == [f"davis:{davis}"] and len(record["heldout_videos"]) == 1
    assert set(record["heldout_videos"]).isdisjoint(record["train_videos"])
    for folder in (out, out / "best"):
        model = sam2_core.build_model(str(folder / "config.json"), str(folder / "model.pt"))
        assert model.image_size == 64


def test_clips_from_a_davis_folder_match_its_annotations(tmp_path):
    davis = write_davis(tmp_path / "davis", [3])
    data = load_training_data([parse_data_spec(f"davis:{davis}")])
    video = generate_video(3, SYNTH)
    source = TableClips(data.train, reverse_prob=0.0, max_objects=5)
    clip = source.sample(np.random.default_rng(0), 3)
    start = int(clip.source.split("frames ")[1].split("-")[0])
    truth = video.masks[:, start : start + 3]
    visible = truth[:, 0].reshape(len(truth), -1).sum(1) >= 20
    assert np.array_equal(clip.masks, truth[visible])
    assert clip.frames.shape == (3, 64, 64, 3)
    assert np.abs(clip.frames.astype(int) - video.frames[start : start + 3]).mean() < 8  # JPEG


def test_background_loading_gives_the_steps_batches_and_raises_the_sources_error():
    source = SyntheticClips(SYNTH, first_seed=1000, reuse=1.0)
    plan = BatchPlan(batch_size=2, micro_batch=1)

    def make(step):
        return step_batches(source, plan, seed=0, step=step, clip_len=2, image_size=64)

    with BackgroundBatches(make, 3, 6, depth=2) as loader:
        got = [b for _, b in zip(range(3), loader)]
    assert [b.step for b in got] == [3, 4, 5]
    for b in got:
        expected = make(b.step)
        for (c1, x), (c2, y) in zip(b.chunks, expected.chunks):
            assert c1 == c2 and torch.equal(x.images, y.images) and torch.equal(x.masks, y.masks)

    def broken(step):
        raise ValueError(f"frame file of step {step} is corrupt")

    with (
        BackgroundBatches(broken, 0, 4) as loader,
        pytest.raises(ValueError, match="step 0 is corrupt"),
    ):
        next(iter(loader))


def test_a_davis_folder_with_a_missing_annotation_names_the_file(tmp_path):
    davis = write_davis(tmp_path / "davis", [1], skip_png=("vid1", 4))
    with pytest.raises(
        FileNotFoundError, match=r"Annotations/vid1/00004\.png: missing annotation of frame 4"
    ):
        load_training_data([DataSpec("davis", str(davis))])


def test_frames_of_another_size_than_their_masks_are_named(tmp_path, tiny_config, capsys):
    davis = write_davis(tmp_path / "davis", [1], frame_size=(80, 64))
    with pytest.raises(ValueError, match=r"JPEGImages/vid1 is 80x64 but its masks .* are 64x64"):
        load_training_data([DataSpec("davis", str(davis))])
    argv = [
        "train",
        "--config",
        str(tiny_config),
        "--data",
        f"davis:{davis}",
        "--output",
        str(tmp_path / "o"),
    ]
    assert jobs_main(argv) == 1
    assert "JPEGImages/vid1 is 80x64" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty --data spec"),
        ("davis:", "no location after davis:"),
        ("coco:/x", "unknown kind 'coco'"),
    ],
)
def test_bad_data_specs_are_refused(spec, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        jobs_main(["train", "--config", "x", "--output", str(tmp_path / "o"), "--data", spec])
    assert message in capsys.readouterr().err


def test_a_run_output_with_failed_units_is_refused_naming_the_failures_file(tmp_path):
    from pipeline.records import UnitFailure
    from pipeline.sink import OutputStore

    out = tmp_path / "run"
    OutputStore(str(out)).write_failures(
        [
            UnitFailure(
                "u1", "v.mp4", "vid7", (1,), "m.jsonl:1", 3, "VideoDecodeError", False, "corrupt"
            )
        ]
    )
    with pytest.raises(
        ValueError,
        match=r"failures/failures.parquet: 1 unit\(s\) of this run failed \(videos vid7\)",
    ):
        load_training_data([DataSpec("run", str(out))])


@pytest.mark.slow
def test_fine_tuning_on_the_demos_label_run(tmp_path, tiny_config, capsys):
    demo = tmp_path / "demo"
    assert (
        jobs_main(
            ["demo", "--videos", "3", "--workers", "1", "--num-cpus", "1", "--output", str(demo)]
        )
        == 0
    )
    out = tmp_path / "out"
    argv = [
        "train",
        "--config",
        str(tiny_config),
        "--data",
        f"run:{demo / 'labels'}",
        "--output",
        str(out),
        "--steps",
        "30",
        "--batch-size",
        "2",
        "--clip-len",
        "2",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--log-every",
        "5",
        "--checkpoint-every",
        "30",
        "--eval-videos",
        "1",
    ]
    capsys.readouterr()
    assert jobs_main(argv) == 0
    assert "2 training video(s); held out: synthetic-" in capsys.readouterr().out
    losses = _losses(out)
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert (out / "best" / "model.pt").is_file()
    model = sam2_core.build_model(str(out / "config.json"), str(out / "model.pt"))
    assert model.image_size == 64


def test_training_to_an_s3_url_writes_there_and_resumes_from_there(tmp_path, tiny_config, capsys):
    from s3_server import start_s3

    davis = write_davis(tmp_path / "davis", [1])
    with start_s3(buckets=["train-out"]) as s3:
        url = "s3://train-out/runs/first"
        argv = [
            "train",
            "--config",
            str(tiny_config),
            "--data",
            f"davis:{davis}",
            "--output",
            url,
            "--storage-options",
            json.dumps(s3.storage_options),
            "--batch-size",
            "1",
            "--clip-len",
            "2",
            "--warmup-steps",
            "1",
            "--log-every",
            "1",
            "--checkpoint-every",
            "2",
        ]
        assert jobs_main([*argv, "--steps", "2"]) == 0
        printed = capsys.readouterr().out
        assert f"model {url}/model.pt" in printed and "train-output-" not in printed
        fs = s3.filesystem()
        names = {p.rpartition("runs/first/")[2] for p in fs.find("train-out/runs/first")}
        assert {"model.pt", "config.json", "train_state.pt", "log.jsonl"} <= names
        assert jobs_main([*argv, "--steps", "4", "--resume"]) == 0
        assert "resumed at step 2" in capsys.readouterr().out
        steps = [
            json.loads(line)["step"]
            for line in fs.cat_file("train-out/runs/first/log.jsonl").decode().splitlines()
        ]
        assert steps == [1, 2, 3, 4]
        model = sam2_core.build_model(
            f"{url}/config.json", f"{url}/model.pt", storage_options=s3.storage_options
        )
        assert model.image_size == 64
        assert jobs_main([*argv, "--output", "s3://train-out/none", "--resume"]) == 1
        assert "nothing at s3://train-out/none" in capsys.readouterr().err


def write_sav(root, seed, step, frame_count=None):
    """An SA-V folder from a synthetic video of ``SYNTH.num_frames * step`` frames: the mp4 and
    ``<video>_manual.json`` with a masklet entry every ``step``-th frame (SA-V's own files:
    step 4), ``video_frame_count`` the mp4's frames unless given."""
    from pipeline.masks import encode_mask
    from pipeline.synthetic_io import encode_mp4

    config = SyntheticConfig(
        height=64, width=64, num_frames=SYNTH.num_frames * step, min_objects=1, max_objects=2
    )
    video = generate_video(seed, config)
    name = f"sav_{seed:06d}"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.mp4").write_bytes(encode_mp4(video.frames))
    masklet = [
        [
            {"size": [64, 64], "counts": encode_mask(video.masks[i, t])[0]}
            for i in range(len(video.object_ids))
        ]
        for t in range(0, len(video.frames), step)
    ]
    record = {
        "video_id": name,
        "video_frame_count": len(video.frames) if frame_count is None else frame_count,
        "video_height": 64,
        "video_width": 64,
        "masklet": masklet,
        "masklet_id": list(range(len(video.object_ids))),
    }
    (root / f"{name}_manual.json").write_text(json.dumps(record))
    return video


@pytest.mark.parametrize("step", [1, 4])
def test_clips_from_an_sa_v_folder_run_over_its_annotated_frames(tmp_path, step):
    video = write_sav(tmp_path / "sav", 5, step)
    data = load_training_data([parse_data_spec(f"sav:{tmp_path / 'sav'}")])
    (train,) = data.train
    assert (train.frame_step, train.num_frames) == (step, SYNTH.num_frames)
    source = TableClips(data.train, reverse_prob=0.0, max_objects=5)
    for seed in range(3):
        clip = source.sample(np.random.default_rng(seed), 3)
        start = int(clip.source.split("frames ")[1].split("-")[0])
        frames = [(start + j) * step for j in range(3)]  # the annotated video frames
        truth = video.masks[:, frames]
        shown = truth[:, 0].reshape(len(truth), -1).sum(1) >= 20
        assert np.array_equal(clip.masks, truth[shown])
        assert np.abs(clip.frames.astype(int) - video.frames[frames]).mean() < 8  # H.264


def test_held_out_j_and_f_on_sa_v_steps_scores_the_annotated_frames(tmp_path):
    from pipeline.training.heldout import heldout_jf
    from sam2_core.demo_model import build_demo_model

    write_sav(tmp_path / "dense", 7, 1)
    write_sav(tmp_path / "stepped", 7, 4)
    model = build_demo_model("cpu")
    reports = {}
    for name in ("dense", "stepped"):
        data = load_training_data([parse_data_spec(f"sav:{tmp_path / name}")])
        reports[name] = heldout_jf(model, data.train)
    # Predictions land on the annotated frames of the stepped file (a prediction on another
    # frame would leave the truth's frames without one), and the demo model tracks there.
    for report in reports.values():
        assert report.objects and report.warnings == []
        assert all(o.frames >= 1 and o.missing_frames == 0 for o in report.objects)
        assert report.jf > 0.5


@pytest.mark.parametrize(
    "frame_count, message",
    [(10, "do not spread evenly"), (3, "at least the 8 masklet entries"), ("many", "whole number")],
)
def test_sa_v_files_whose_entries_do_not_fit_the_video_are_named(tmp_path, frame_count, message):
    write_sav(tmp_path / "sav", 5, 1, frame_count=frame_count)
    with pytest.raises(ValueError, match=message) as caught:
        load_training_data([parse_data_spec(f"sav:{tmp_path / 'sav'}")])
    assert "sav_000005_manual.json" in str(caught.value)
