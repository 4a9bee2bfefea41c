"""Every benchmark's main() runs in a tiny configuration and writes the JSON it promises,
so the benchmark scripts do not rot as the code under them changes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import bench_encoder, bench_memory, bench_pipeline, bench_tracker, flops  # noqa: E402


def _load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert (
        doc["device"]["cpu"]
        and doc["device"]["cpu_count"] >= 1
        and doc["device"]["torch_threads"] >= 1
    )
    for key in ("python", "torch", "numpy", "ray", "av", "git"):
        assert key in doc["versions"], key
    assert doc["versions"]["torch"] and doc["command"].startswith("python")
    return doc


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_tracker_compares_batched_and_object_by_object(mini_a_dir, tmp_path):
    out = tmp_path / "tracker.json"
    bench_tracker.main(
        [
            "--objects",
            "1,2",
            "--frames",
            "5",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--size",
            "64x80",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    doc = _load(out)
    assert doc["benchmark"] == "bench_tracker"
    s = doc["settings"]
    assert s["objects"] == [1, 2] and s["timed_frames_per_pass"] == 3 and s["image_size"] == 256
    results = doc["figures"]["results"]
    assert [r["objects"] for r in results] == [1, 2]
    for r in results:
        for mode in ("batched", "object_by_object"):
            st = r[mode]
            assert st["count"] == 3 * 2  # timed frames x passes
            assert len(st["pass_frames_per_s"]) == 2
            assert _positive(st["frames_per_s"]) and st["median_ms"] <= st["p90_ms"] <= st["max_ms"]
        assert r["speedup"] == pytest.approx(
            r["batched"]["frames_per_s"] / r["object_by_object"]["frames_per_s"]
        )


def test_bench_tracker_rejects_too_few_frames():
    with pytest.raises(SystemExit):
        bench_tracker.parse_args(["--frames", "3", "--warmup", "2"])


@pytest.mark.slow
def test_bench_memory_runs_each_length_in_its_own_process(mini_a_dir, tmp_path):
    out = tmp_path / "memory.json"
    bench_memory.main(
        [
            "--lengths",
            "4,6",
            "--reference-length",
            "4",
            "--objects",
            "2",
            "--size",
            "64x80",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    doc = _load(out)
    assert doc["settings"]["bounded"] is True and doc["settings"]["lengths"] == [4, 6]
    results = doc["figures"]["results"]
    assert [r["length"] for r in results] == [4, 6]
    for r in results:
        assert r["peak_rss_bytes"] >= r["rss_after_build_bytes"] > 0
        assert 0 < r["max_stored_frames"] <= 2 * r["length"]
        assert r["max_stored_bytes"] > 0 and r["rss_samples"][-1]["frame"] == r["length"] - 1
    c = doc["figures"]["comparison"]
    assert c["lengths"] == [6, 4]
    assert c["peak_rss_ratio"] == pytest.approx(
        results[1]["peak_rss_bytes"] / results[0]["peak_rss_bytes"]
    )
    assert c["within_target"] == (c["peak_rss_ratio"] <= c["target_ratio"])


def test_bench_encoder_reports_each_batch_size(tmp_path):
    out = tmp_path / "encoder.json"
    bench_encoder.main(
        [
            "--batch-sizes",
            "1,2",
            "--repeats",
            "2",
            "--image-size",
            "64",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    doc = _load(out)
    assert doc["settings"]["image_size"] == 64
    results = doc["figures"]["results"]
    assert [r["batch_size"] for r in results] == [1, 2]
    for r in results:
        assert _positive(r["images_per_s"]) and r["batches"] == 2
        assert r["per_image_ms"] == pytest.approx(r["batch_median_ms"] / r["batch_size"])


def test_flops_counter_agrees_with_the_hand_count(tmp_path):
    out = tmp_path / "flops.json"
    mini = str(REPO.parent / "shared" / "sam2_reference" / "mini_a" / "config.json")
    flops.main(["--models", mini, "--objects", "1,3", "--json", str(out)])
    doc = _load(out)
    one, three = doc["figures"]["results"]
    f = one["flops"]
    assert (
        f["total"]
        == f["image_encoder"] + f["memory_attention"] + f["mask_decoder"] + f["memory_encoder"]
    )
    # The counter's memory attention matches the closed-form count, alone and for three
    # objects sharing the frame (whose first self-attention runs once, so less than 3x).
    for r in (one, three):
        assert r["flops"]["memory_attention"] == pytest.approx(
            r["objects"] * r["memory_attention_hand_count_per_object"], rel=1e-6
        )
    assert (
        2.5 * f["memory_attention"] < three["flops"]["memory_attention"] < 3 * f["memory_attention"]
    )
    assert (
        three["flops"]["image_encoder"] == f["image_encoder"]
    )  # once per frame, whatever the objects
    for gpu, fps in one["roofline_frames_per_s"].items():
        assert fps == pytest.approx(doc["settings"]["peak_bf16_tflops"][gpu] * 1e12 / f["total"])


def test_flops_memory_attention_at_1024_is_about_half_a_teraflop_per_object():
    r = flops.tracking_flops("sam2.1_hiera_tiny", 1)
    assert r["image_size"] == 1024 and r["memory_frames"] == 7
    assert 0.4e12 < r["flops_per_object"]["memory_attention"] < 0.7e12


@pytest.mark.slow
def test_bench_pipeline_labels_a_manifest_end_to_end(mini_a_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "pipeline.json"
    bench_pipeline.main(
        [
            "--videos",
            "2",
            "--frames",
            "4",
            "--objects",
            "1",
            "--size",
            "64x64",
            "--workers",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    doc = _load(out)
    (run,) = doc["figures"]["runs"]
    assert run["status"] == "ok" and run["failed"] == 0 and run["units_done"] == 2
    assert run["frames"] == 2 * 4 and run["rows"] == 2 * 4 * 1
    assert (
        _positive(run["summary_frames_per_s"])
        and run["command_wall_s"] >= run["summary_wall_time_s"]
    )
    single = doc["figures"]["single_process"]
    assert single["frames"] == 8
    assert sum(single["share"].values()) == pytest.approx(1.0)
    assert 0 < single["share"]["decode"] < 1
    assert (tmp_path / "work" / "out_w1" / "summary.json").exists()


def test_bench_dtype_compares_bfloat16_options_with_float32(tmp_path):
    from benchmarks import bench_dtype

    out = tmp_path / "dtype.json"
    bench_dtype.main(["--seeds", "1", "--threads", "1", "--json", str(out)])
    doc = _load(out)
    assert doc["settings"]["weights"] == "checkpoint" and doc["settings"]["seeds"] == [1]
    options = doc["figures"]["options"]
    assert set(options) == set(bench_dtype.OPTIONS)
    for figures in options.values():
        assert figures["object_frames"] == 48 * 2  # seed 1: two objects, 48 frames
        assert 0.9 < figures["mean_iou"] <= 1.0 and figures["min_iou"] <= figures["mean_iou"]
    with pytest.raises(SystemExit):
        bench_dtype.parse_args(["--seeds", "1000"])  # a training seed


@pytest.mark.slow
def test_bench_dtype_measures_each_bf16_policy_on_a_recorded_case(mini_a_dir, tmp_path):
    from benchmarks import bench_dtype

    out = tmp_path / "parts.json"
    args = ["--case", str(mini_a_dir), "--cases", "video", "--threads", "1", "--json", str(out)]
    bench_dtype.main(args)
    policies = json.loads(out.read_text())["figures"]["policies"]
    assert policies["float32 (no autocast)"]["video"]["mean_iou"] == 1.0
    default = policies["default policy (memory_attention.feed_forward)"]["video"]
    assert default["mean_iou"] >= 0.99 and default["presence_flips"] == 0
    for name in (
        "memory_attention, attention cores float32",
        "memory_attention, attention projections float32",
        "memory_attention (all its parts)",
        "every part + bf16 memories",
    ):
        assert policies[name]["video"]["masks"] == 75, name
    # the attention splits really keep something in float32: each moves the masks otherwise
    whole, cores, projections = (
        policies[f"memory_attention{n}"]["video"]["mean_iou"]
        for n in (
            " (all its parts)",
            ", attention cores float32",
            ", attention projections float32",
        )
    )
    assert len({whole, cores, projections}) == 3


def test_bench_vs_official_times_both_and_checks_their_masks_agree(mini_a_dir, tmp_path):
    from benchmarks import bench_vs_official

    if not bench_vs_official.official_available():
        pytest.skip(
            "Meta's sam2 1.1.0 is not installed (the 'reference' extra; see benchmarks/README.md)"
        )
    out = tmp_path / "vs_official.json"
    bench_vs_official.main(
        [
            "--objects",
            "1,2",
            "--frames",
            "4",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--size",
            "64x80",
            "--threads",
            "1",
            "--breakdown",
            "--json",
            str(out),
        ]
    )
    doc = _load(out)
    assert doc["benchmark"] == "bench_vs_official" and doc["versions"]["sam2"] == "1.1.0"
    s = doc["settings"]
    assert (
        s["variants"] == ["official", "ours", "ours_no_ahead"] and s["steady_frames_per_pass"] == 2
    )
    assert s["ours_encode_ahead"] == {"ours": None, "ours_no_ahead": False}
    results = doc["figures"]["results"]
    assert [r["objects"] for r in results] == [1, 2]
    for r in results:
        for v in s["variants"]:
            assert len(r[v]["whole_job_s"]) == 2 and r[v]["steady"]["count"] == 2 * 2
            assert _positive(r[v]["whole_job_median_s"]) and _positive(
                r[v]["steady"]["frames_per_s"]
            )
            b = r["breakdown_ms_per_frame"][v]
            assert b["frames"] == 2 * 2 and 1 <= b["frames_kept"] <= b["frames"]
            assert r[v]["whole_job_min_s"] <= r[v]["whole_job_median_s"]
            assert b["image_encoder_ms"] > 0 and b["memory_attention_ms"] > 0
            assert b["total_ms"] == pytest.approx(
                b["rest_ms"] + sum(b[f"{p}_ms"] for p in bench_vs_official.PARTS)
            )
        for v in ("ours", "ours_no_ahead"):
            assert r[v]["speedup_whole_job"] == pytest.approx(
                r["official"]["whole_job_median_s"] / r[v]["whole_job_median_s"]
            )
            agree = r[v]["masks_vs_official"]
            assert agree["object_frames"] == 4 * r["objects"]
            # Same weights, frames and clicks: the masks are near-identical (parity holds; Meta
            # stores its memory in bfloat16, ours in float32 by default).
            assert agree["mean_iou"] > 0.97
            assert 0 < agree["reference_present"] <= 1  # the prompted frame has every object


def test_bench_vs_official_needs_meta_and_one_of_ours():
    from benchmarks import bench_vs_official

    with pytest.raises(SystemExit):
        bench_vs_official.parse_args(["--variants", "ours,ours_prefetch0"])
    with pytest.raises(SystemExit):
        bench_vs_official.parse_args(["--variants", "official"])


def test_random_official_weights_load_strictly_on_both_sides(tmp_path):
    """The GPU script's real-size models: Meta's sam2.1_hiera_tiny with seeded random weights,
    loaded strictly by Meta's predictor and by ours, the same tensors on both."""
    from benchmarks import bench_vs_official, random_official

    if not bench_vs_official.official_available():
        pytest.skip(
            "Meta's sam2 1.1.0 is not installed (the 'reference' extra; see benchmarks/README.md)"
        )
    import torch

    import sam2_core

    config, checkpoint = random_official.write_random_official(
        "sam2.1_hiera_tiny", tmp_path / "tiny", seed=3
    )
    tree = json.loads(config.read_text())["resolved"]
    assert tree["_target_"] == random_official.VIDEO_PREDICTOR and tree["image_size"] == 1024
    assert tree["binarize_mask_from_pts_for_mem_enc"] is True
    official = bench_vs_official.build_official(str(config), str(checkpoint), "cpu")
    ours = sam2_core.build_model(str(config), str(checkpoint))
    theirs, mine = official.state_dict(), ours.state_dict()
    assert set(mine) <= set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    _, again = random_official.write_random_official("sam2.1_hiera_tiny", tmp_path / "b", seed=3)
    saved = torch.load(again, weights_only=True)["model"]
    assert all(torch.equal(saved[k], theirs[k]) for k in saved)  # the seed decides the weights


def test_bench_vs_official_can_keep_every_object_present(mini_a_dir, tmp_path):
    from benchmarks import bench_vs_official

    if not bench_vs_official.official_available():
        pytest.skip("Meta's sam2 package (the [reference] extra) is not installed")
    doc = bench_vs_official.main(
        [
            "--objects", "2", "--frames", "5", "--warmup", "1", "--repeats", "1",
            "--size", "64x80", "--variants", "official,ours", "--present",
            "--json", str(tmp_path / "present.json"),
        ]
    )  # fmt: skip
    (entry,) = doc["figures"]["results"]
    agree = entry["ours"]["masks_vs_official"]
    assert doc["settings"]["objects_kept_present"] is True
    assert agree["reference_present"] == 1.0 and agree["mean_iou"] > 0.97
    # the checkpoint named in the settings is the caller's, unchanged
    assert doc["settings"]["checkpoint"] == str(mini_a_dir / "checkpoint.pt")
