"""Prompt-free masklets: a video line without objects asks for every object
(sam2_core.discovery, pipeline.masklets), planned, labeled and committed like any other unit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.manifest import read_manifest
from pipeline.masklets import label_masklets, masklet_scores
from pipeline.masks import masks_from_table
from pipeline.plan import WHOLE_VIDEO, plan_units
from pipeline.synthetic_io import encode_mp4
from sam2_core.demo_model import DEMO_SYNTHETIC_CONFIG
from sam2_core.synthetic import generate_video

# The demo model's tuned automatic-mask settings (benchmarks.bench_masklets.DEMO_AUTO).
AUTO = {
    "points_per_side": 16,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.85,
    "multimask_output": False,
}
SMALL = dataclasses.replace(
    DEMO_SYNTHETIC_CONFIG, num_frames=24, min_objects=2, max_objects=3, late_entries=1.0
)
SEED = 6  # object 1 from frame 0, object 2 enters at frame 12


def _write_jsonl(path, entries) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(path)


def test_video_line_without_objects_asks_for_every_object(tmp_path):
    manifest = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"video": "a.mp4"},
            {"video": "b.mp4", "auto": {"points_per_side": 8, "multimask_output": False}},
            {"video": "c.mp4", "objects": []},
            {"video": "d.mp4", "auto": {"points_per_sid": 8}},
            {
                "video": "e.mp4",
                "auto": {"points_per_side": 8},
                "objects": [
                    {"object_id": 1, "prompts": [{"frame": 0, "points": [[1, 1]], "labels": [1]}]}
                ],
            },
        ],
    )
    jobs, rejects = read_manifest(manifest)
    assert [(j.video_id.split("-")[0], j.objects, j.auto) for j in jobs] == [
        ("a", (), ()),
        ("b", (), (("multimask_output", False), ("points_per_side", 8))),
    ]
    assert [(r.location, r.field) for r in rejects] == [
        ("m.jsonl line 3", "objects"),
        ("m.jsonl line 4", "auto.points_per_sid"),
        ("m.jsonl line 5", "auto"),
    ]
    assert "left out to find every object" in rejects[0].reason


def test_discovery_unit_claims_its_video_whole_and_its_id_follows_the_settings(tmp_path):
    manifest = _write_jsonl(tmp_path / "m.jsonl", [{"video": "a.mp4", "video_id": "a"}])
    jobs, _ = read_manifest(manifest)
    ids = {jobs[0].video: "size=1"}

    def plan(job=jobs[0], **kw):
        return plan_units([job], "model", "digest", identities=ids, **kw)

    (unit,) = plan()
    assert unit.object_ids == (WHOLE_VIDEO,) and unit.claim_keys == (("a", WHOLE_VIDEO),)
    assert unit.job.discover_every == 15
    assert plan()[0].unit_id == unit.unit_id == plan(discover_every=15)[0].unit_id
    assert plan(discover_every=10)[0].unit_id != unit.unit_id
    other = dataclasses.replace(jobs[0], auto=(("points_per_side", 8),))
    assert plan(other)[0].unit_id != unit.unit_id


def test_masklet_scores_best_match_and_duplicates():
    t, h, w = 4, 8, 8
    truth = np.zeros((t, h, w), bool)
    truth[:, 2:6, 2:6] = True
    truth[0] = False  # absent on frame 0: not scored there
    near = truth.copy()
    near[:, 2:6, 5] = False  # 12 of 16 pixels
    far = np.zeros((t, h, w), bool)
    far[:, 0, 0] = True
    scores = masklet_scores({1: far, 2: near, 3: near.copy()}, {7: truth})
    assert scores.best_j == (0.75,) and scores.first_frame == (1,)
    assert (scores.masklets, scores.duplicates) == (3, 1)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    video = generate_video(SEED, SMALL)
    assert [int(np.argmax(m.any(axis=(1, 2)))) for m in video.masks] == [0, 12]
    path = tmp_path_factory.mktemp("masklets") / "v.mp4"
    path.write_bytes(encode_mp4(video.frames))
    return str(path), video


@pytest.fixture(scope="module")
def demo():
    from sam2_core.demo_model import build_demo_model

    return build_demo_model("cpu")


def _job(path: str, every: int = 8):
    from pipeline.manifest import VideoJob

    return VideoJob(
        path, "v", (), "m.jsonl line 1", auto=tuple(sorted(AUTO.items())), discover_every=every
    )


@pytest.mark.slow
def test_prompt_free_masklets_find_an_object_entering_mid_video(
    small_video, demo, one_torch_thread
):
    path, video = small_video
    table, stats = label_masklets(demo, _job(path), run_id="r", model_name="demo")
    again, _ = label_masklets(demo, _job(path), run_id="r", model_name="demo")
    assert table.equals(again)  # deterministic: retries and resume write the same rows
    assert stats.objects == 2 and table.num_rows == 2 * 24
    assert set(table.column("prompted").to_pylist()) == {False}
    assert set(table.column("source").to_pylist()) == {"auto"}  # found, not prompted
    assert table.column("category").null_count == table.num_rows
    logits, present = (table.column(c).to_pylist() for c in ("object_score_logit", "present"))
    assert [logit > 0 for logit in logits] == present
    masks = masks_from_table(table)
    predicted = {o: np.stack([masks[("v", o, f)] for f in range(24)]) for o in (1, 2)}
    scores = masklet_scores(predicted, dict(enumerate(video.masks)))
    assert min(scores.best_j) >= 0.6 and scores.duplicates == 0
    # The late object was found on keyframe 16 yet has masks before it: it shows from frame 12.
    late = predicted[2]
    assert not late[:10].any() and late[12:16].any()


def test_video_where_nothing_is_found_gives_an_empty_table(tmp_path, demo, one_torch_thread):
    frames = np.full((6, 64, 64, 3), 128, dtype=np.uint8)
    path = tmp_path / "blank.mp4"
    path.write_bytes(encode_mp4(frames))
    table, stats = label_masklets(demo, _job(str(path), every=3), run_id="r", model_name="demo")
    assert table.num_rows == 0 and stats.objects == 0 and stats.frames == 6


@pytest.mark.slow
def test_distributed_discovery_equals_single_process_and_empty_video_commits(
    ray_local, small_video, tmp_path
):
    from pipeline.coordinator import RunConfig, run_labeling
    from pipeline.labeling import label_jobs
    from pipeline.retry import RetryPolicy
    from pipeline.sink import OutputStore, read_masks
    from sam2_core import build_model
    from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH
    from sam2_core.hub import sha256_file

    path, _ = small_video
    blank = tmp_path / "blank.mp4"
    blank.write_bytes(encode_mp4(np.full((6, 64, 64, 3), 128, dtype=np.uint8)))
    manifest = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"video": path, "video_id": "v", "auto": AUTO},
            {"video": str(blank), "video_id": "blank", "auto": AUTO},
        ],
    )
    config = RunConfig(
        manifest=manifest,
        output=str(tmp_path / "out"),
        model=str(DEMO_CONFIG_PATH),
        checkpoint=str(DEMO_CHECKPOINT_PATH),
        workers=2,
        torch_threads=1,
        run_id="run",
        progress=False,
        retry=RetryPolicy(max_attempts=2, backoff_s=0.1),
        discover_every=8,
    )
    result = run_labeling(config)
    assert result.exit_code == 0, result.failures
    assert (result.summary.units, result.summary.units_done) == (2, 2)
    seconds = result.summary.unit_seconds  # where prompt-free time goes: finding, then tracking
    assert 0 < seconds.propose < seconds.discover < seconds.total and seconds.track > 0
    store = OutputStore(str(tmp_path / "out"))
    assert len(store.committed_units()) == 2  # the empty video is a committed unit
    jobs, _ = read_manifest(manifest)
    jobs = [dataclasses.replace(j, discover_every=8) for j in jobs]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(str(DEMO_CONFIG_PATH), checkpoint=str(DEMO_CHECKPOINT_PATH))
        name = f"assets/demo_config.json@{sha256_file(str(DEMO_CHECKPOINT_PATH))[:12]}"
        expected = label_jobs(model, jobs, run_id="run", model_name=name)
    finally:
        torch.set_num_threads(threads)
    keys = [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    actual = read_masks(str(tmp_path / "out")).sort_by(keys)
    assert actual.num_rows == expected.num_rows > 0
    assert actual.select(expected.schema.names).equals(expected)
    # A re-run finds both units committed and labels nothing.
    again = run_labeling(config)
    assert (again.exit_code, again.summary.skipped, again.summary.units_done) == (0, 2, 0)
    # A worker killed mid-video (in the discovery pass) is replaced; the retry writes the same rows.
    from fault_workers import Fault, faulty_worker

    killed = dataclasses.replace(config, output=str(tmp_path / "killed"))
    result = run_labeling(killed, faulty_worker(Fault(video_id="v", kind="exit", at_frame=5)))
    assert result.exit_code == 0 and result.summary.retries >= 1, result.failures
    retried = read_masks(str(tmp_path / "killed")).sort_by(keys)
    assert retried.select(expected.schema.names).equals(expected)
