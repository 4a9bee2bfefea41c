"""The GPU path of `jobs label`, on CPU terms: its options (--dtype, --compile, --offload-memory,
--image-size, --no-tf32) reach every worker, which reports what it actually runs with; the
device plan a worker makes from its Ray GPU share; the output path (masks thresholded where
computed, RLE encoded off the tracking thread, per-stage seconds in summary.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from labeling_helpers import RUN_ID, make_clip, mini_files, run_config, write_jsonl

from pipeline.device import ComputeOptions, DevicePlan, device_plan, tracker_options
from pipeline.records import ChunkSummary, OomRetries, RunSummary, UnitSeconds, WorkerSettings
from sam2_core.tracker import TrackerOptions

REPO = Path(__file__).resolve().parents[1]
STAGES = {
    "total",
    "track",
    "decode",
    "transfer",
    "encode",
    "encode_wait",
    "write",
    "discover",
    "propose",
}


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory, videos_dir) -> tuple[Path, Path]:
    """An 8-frame clip with two prompted objects, and its manifest."""
    folder = tmp_path_factory.mktemp("gpu-options")
    clip = make_clip(videos_dir / "01_dog.mp4", folder / "dog.mp4", frames=8)
    entry = {
        "video": str(clip),
        "video_id": "dog",
        "objects": [
            {"object_id": 1, "prompts": [{"frame": 0, "points": [[64, 50]], "labels": [1]}]},
            {"object_id": 2, "prompts": [{"frame": 3, "box": [10, 10, 60, 70]}]},
        ],
    }
    return folder, write_jsonl(folder / "manifest.jsonl", [entry])


# ------------------------------------------------------------------ options -> tracker


def test_compute_options_map_to_tracker_options_and_keep_its_other_defaults():
    assert tracker_options(ComputeOptions()) == TrackerOptions()
    bf16 = tracker_options(ComputeOptions(dtype="bfloat16", offload_memory=True))
    assert bf16.autocast_dtype == bf16.memory_dtype == torch.bfloat16
    assert bf16.storage_device == "cpu"
    assert bf16.prefetch_frames == TrackerOptions().prefetch_frames


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dtype": "float16"}, "dtype must be one of float32, bfloat16"),
        ({"image_size": 500}, "multiple of 32"),
    ],
)
def test_compute_options_refuse_bad_values_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        ComputeOptions(**changes)


# ------------------------------------------------------------------ image size


def test_a_model_built_at_another_image_size_loads_the_same_checkpoint_strictly_and_tracks(
    mini_a_dir,
):
    import numpy as np

    from sam2_core import build_model
    from sam2_core.prompts import ObjectPrompt
    from sam2_core.tracker import track_video

    config, checkpoint = mini_files(mini_a_dir)
    model = build_model(config, checkpoint, image_size=128)  # strict: raises on any mismatch
    assert model.image_size == 128 and model.cfg.memory_attention.feat_sizes == (8, 8)

    class Frames(list):  # a FrameSource: three 96 x 128 noise frames
        height, width = 96, 128

    rng = np.random.default_rng(0)
    frames = Frames(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3))
    prompt = ObjectPrompt(1, 0, points=np.array([[60.0, 40.0]]), labels=np.array([1]))
    out = list(track_video(model, frames, [prompt]))
    assert [r.frame_index for r in out] == [0, 1, 2]
    assert out[0].mask_logits.shape == (1, 96, 128)
    with pytest.raises(ValueError, match="image size 80 does not fit"):
        build_model(config, checkpoint, image_size=80)


# ------------------------------------------------------------------ device plan


def test_cpu_plan_without_a_gpu_share_or_without_cuda():
    for share, cuda in ((0.0, True), (0.5, False)):
        plan = device_plan(share, ["0"], 3, cuda_available=cuda, visible_devices="0")
        assert plan == DevicePlan(devices=("cpu",), slots=("cpu",) * 3)


def test_fractional_share_caps_the_allocator_and_gives_each_unit_a_stream():
    plan = device_plan(0.5, ["2"], 2, cuda_available=True, visible_devices="2")
    assert plan.devices == ("cuda:0",)  # Ray made GPU 2 the only visible one
    assert plan.slots == ("cuda:0", "cuda:0") and plan.streams
    assert plan.memory_fraction == pytest.approx(0.475)
    assert plan.tf32
    whole = device_plan(1.0, ["2"], 1, cuda_available=True, visible_devices="2")
    assert whole.memory_fraction is None


def test_several_gpus_per_worker_are_all_used_round_robin_over_units():
    plan = device_plan(2.0, ["3", "1"], 3, cuda_available=True, visible_devices="3,1")
    assert plan.devices == ("cuda:0", "cuda:1")
    assert plan.slots == ("cuda:0", "cuda:1", "cuda:0")
    # Ray told not to set CUDA_VISIBLE_DEVICES: its ids index the devices directly
    unset = device_plan(2.0, [2, 5], 2, cuda_available=True, visible_devices=None)
    assert unset.devices == ("cuda:2", "cuda:5")
    everything = device_plan(2.0, [2, 5], 2, cuda_available=True, visible_devices="0,1,2,3,4,5")
    assert everything.devices == ("cuda:2", "cuda:5")
    # outside Ray (no assignment): the first device
    assert device_plan(1.0, [], 1, cuda_available=True).devices == ("cuda:0",)
    assert not device_plan(1.0, [], 1, cuda_available=True, tf32=False).tf32


# ------------------------------------------------------------------ the worker reports its settings


def test_worker_reports_the_settings_it_built_with(mini_a_dir, tmp_path):
    from pipeline.worker import LabelWorker, WorkerConfig

    config, checkpoint = mini_files(mini_a_dir)
    worker = LabelWorker(
        WorkerConfig(
            model=config,
            checkpoint=checkpoint,
            checkpoint_digest=None,
            output=str(tmp_path / "out"),
            run_id="run",
            model_name="mini",
            compute=ComputeOptions(dtype="bfloat16", offload_memory=True, image_size=128),
        )
    )
    info = worker.ready()
    assert info.error is None, info.error
    assert info.settings == WorkerSettings(
        devices=("cpu",),
        image_size=128,
        compiled=False,
        autocast_dtype="bfloat16",
        memory_dtype="bfloat16",
        storage_device="cpu",
    )
    assert worker.model.image_size == 128


# ------------------------------------------------------------------ output path


def test_rle_encoding_runs_off_the_tracking_thread_while_tracking_goes_on(
    monkeypatch, one_clip, mini
):
    """Frame 0's rows may only be encoded once the tracker has produced frame 3: if encoding ran
    on the tracking thread (or tracking waited for it) this would time out."""
    import pipeline.labeling as labeling
    import sam2_core.tracker as tracker
    from pipeline.manifest import read_manifest

    tracking_threads: set[int] = set()
    encoding_threads: set[int] = set()
    tracked_three = threading.Event()
    waited_ok: list[bool] = []
    real_track, real_row = tracker.track_session, labeling.mask_row

    def track_session(*args, **kwargs):
        for k, result in enumerate(real_track(*args, **kwargs), start=1):
            tracking_threads.add(threading.get_ident())
            if k == 3:
                tracked_three.set()
            yield result

    def mask_row(video_id, object_id, frame_index, *args, **kwargs):
        encoding_threads.add(threading.get_ident())
        if frame_index == 0 and not waited_ok:
            waited_ok.append(tracked_three.wait(timeout=60))
        return real_row(video_id, object_id, frame_index, *args, **kwargs)

    monkeypatch.setattr(tracker, "track_session", track_session)
    monkeypatch.setattr(labeling, "mask_row", mask_row)
    folder, manifest = one_clip
    (job,), _ = read_manifest(str(manifest))
    table, stats = labeling.label_video(mini, job, run_id="r", model_name="m")
    assert waited_ok == [True], "frame 0 was encoded before tracking reached frame 3"
    assert len(tracking_threads) == 1
    assert encoding_threads and not encoding_threads & tracking_threads
    assert table.num_rows == 2 * 8
    assert stats.encode_s > 0 and stats.transfer_s > 0 and stats.track_s > 0


def test_summary_reads_back_its_stages_and_worker_settings_and_old_commit_seconds():
    summary = RunSummary("r", "m", "o", "model", None, None, "now")
    summary.unit_seconds = UnitSeconds(total=3.0, transfer=0.5, write=0.25)
    summary.worker_settings = [WorkerSettings(image_size=512, compiled=True)]
    summary.object_chunks = ChunkSummary(4, 1, 2, 2, [OomRetries("u1", 2, [2, 1])])
    back = RunSummary.from_json(summary.to_json())
    assert back == summary
    old = json.loads(summary.to_json())
    old["unit_seconds"] = {"total": 1.0, "track": 0.5, "decode": 0.1, "encode": 0.1, "commit": 0.2}
    del old["worker_settings"], old["object_chunks"]
    back = RunSummary.from_json(json.dumps(old))
    assert back.unit_seconds.write == 0.2 and back.worker_settings == []
    assert back.object_chunks == ChunkSummary()


# ------------------------------------------------------------------ on real Ray


def test_ray_workers_run_with_the_options_of_the_run(ray_local, one_clip, mini_a_dir):
    from pipeline.coordinator import run_labeling

    folder, manifest = one_clip
    compute = ComputeOptions(dtype="bfloat16", offload_memory=True, image_size=512)
    result = run_labeling(
        run_config(manifest, folder / "out-ray", mini_a_dir, workers=1, compute=compute)
    )
    assert result.exit_code == 0, result.failures
    summary = RunSummary.from_json((folder / "out-ray" / "summary.json").read_bytes())
    assert summary.rows == 16 and summary.run_id == RUN_ID
    assert summary.worker_settings == [
        WorkerSettings(
            devices=("cpu",),
            image_size=512,
            compiled=False,
            autocast_dtype="bfloat16",
            memory_dtype="bfloat16",
            storage_device="cpu",
        )
    ]
    stages = json.loads((folder / "out-ray" / "summary.json").read_text())["unit_seconds"]
    assert set(stages) == STAGES
    assert all(stages[s] > 0 for s in ("total", "track", "decode", "encode", "write")), stages


@pytest.mark.slow
def test_jobs_label_bfloat16_compiled_at_512_runs_end_to_end_on_cpu(one_clip, mini_a_dir):
    """The command as a user types it, in its own process with its own Ray; compiling the
    hot parts with Inductor takes minutes on a 2-core CPU."""
    folder, manifest = one_clip
    config, checkpoint = mini_files(mini_a_dir)
    out = folder / "out-cli"
    command = [
        sys.executable, "-m", "jobs", "label", "--manifest", str(manifest), "--output", str(out),
        "--model", config, "--checkpoint", checkpoint, "--workers", "1", "--num-cpus", "1",
        "--dtype", "bfloat16", "--compile", "--image-size", "512", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = RunSummary.from_json((out / "summary.json").read_bytes())
    assert (summary.status, summary.units_done, summary.rows) == ("ok", 1, 16)
    (settings,) = summary.worker_settings
    assert settings.compiled and settings.image_size == 512
    assert settings.autocast_dtype == settings.memory_dtype == "bfloat16"
    assert all(
        getattr(summary.unit_seconds, s) > 0 for s in ("track", "transfer", "encode", "write")
    )
