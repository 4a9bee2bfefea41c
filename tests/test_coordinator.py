"""The coordinator over real Ray: resume after the driver is killed half-way, unit splitting,
and the fatal/partial outcomes of a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labeling_helpers import (
    assert_same_rows,
    demo_entries,
    make_clips,
    mini_files,
    reference_table,
    run_config,
    sorted_masks,
    write_jsonl,
)

from pipeline.coordinator import RunFatalError, run_labeling
from pipeline.masks import MASK_SCHEMA
from pipeline.sink import OutputStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, videos_dir, mini_a_dir):
    """Six videos (the three demo clips, each under two names): six units of one to two objects."""
    folder = tmp_path_factory.mktemp("coord")
    clips = make_clips(videos_dir, folder / "clips")
    entries = demo_entries(clips)
    for entry in demo_entries(clips):
        copy = folder / "clips" / f"{entry['video_id']}-b.mp4"
        shutil.copyfile(entry["video"], copy)
        entries.append({**entry, "video": str(copy), "video_id": entry["video_id"] + "-b"})
    manifest = write_jsonl(folder / "manifest.jsonl", entries)
    return folder, manifest


@pytest.fixture(scope="module")
def expected(inputs, mini_a_dir):
    return reference_table(mini_a_dir, inputs[1])


def _commit_times(output: Path) -> dict[str, str]:
    if not (output / "_commits").exists():
        return {}
    return {  # committed: the record and the data file (which appears after it)
        p.stem: json.loads(p.read_text())["committed_at"]
        for p in (output / "_commits").glob("*.json")
        if (output / "masks" / f"{p.stem}.parquet").exists()
    }


@pytest.mark.slow
def test_run_killed_half_way_resumes_without_redoing_committed_units(
    ray_local, inputs, expected, mini_a_dir, tmp_path
):
    _, manifest = inputs
    out = tmp_path / "out"
    model, checkpoint = mini_files(mini_a_dir)
    address = ray_local.get_runtime_context().gcs_address
    command = [
        sys.executable,
        "-m",
        "jobs",
        "label",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--model",
        model,
        "--checkpoint",
        checkpoint,
        "--workers",
        "1",
        "--torch-threads",
        "1",
        "--run-id",
        "test-run",
        "--ray-address",
        address,
        "--no-progress",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while len(_commit_times(out)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no unit committed in time"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-run, like a lost head process
        proc.wait()
    before = _commit_times(out)
    assert 2 <= len(before) < 6, "the run should have been stopped half-way"

    result = run_labeling(run_config(manifest, out, mini_a_dir, workers=2))
    assert result.exit_code == 0, result.failures
    assert result.summary.skipped == len(before)
    assert result.summary.units_done == 6 - len(before)
    after = _commit_times(out)
    assert len(after) == 6
    assert {unit: after[unit] for unit in before} == before  # committed units were not redone
    assert_same_rows(sorted_masks(out), expected)

    # A third run has nothing left to do.
    again = run_labeling(run_config(manifest, out, mini_a_dir))
    assert (again.exit_code, again.summary.skipped, again.summary.units_done) == (0, 6, 0)
    assert _commit_times(out) == after


@pytest.mark.slow
def test_objects_split_into_units_give_one_row_per_object_and_frame(
    ray_local, inputs, mini_a_dir, tmp_path
):
    _, manifest = inputs
    out = tmp_path / "out"
    result = run_labeling(run_config(manifest, out, mini_a_dir, max_objects_per_unit=1))
    assert result.exit_code == 0, result.failures
    assert result.summary.units == 10  # 2 x (2 + 2 + 1) objects
    table = sorted_masks(out)
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    )
    assert len(keys) == len(set(keys)) == 10 * 24
    assert len(OutputStore(str(out)).committed_units()) == 10


def test_unreachable_output_and_missing_checkpoint_are_fatal(inputs, mini_a_dir, tmp_path):
    _, manifest = inputs
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunFatalError, match="not reachable or writable"):
        run_labeling(run_config(manifest, blocker / "out", mini_a_dir))
    with pytest.raises(RunFatalError, match="checkpoint"):
        run_labeling(
            run_config(manifest, tmp_path / "out", mini_a_dir, checkpoint=str(tmp_path / "none.pt"))
        )
    with pytest.raises(RunFatalError, match="manifest"):
        run_labeling(run_config(tmp_path / "none.jsonl", tmp_path / "out", mini_a_dir))


@pytest.mark.slow
def test_several_units_at_once_per_worker_give_the_single_process_table(
    ray_local, inputs, expected, mini_a_dir, tmp_path
):
    # One worker labels three units at a time, their frames batched through the image encoder.
    _, manifest = inputs
    out = tmp_path / "out"
    result = run_labeling(run_config(manifest, out, mini_a_dir, videos_per_worker=3))
    assert result.exit_code == 0, result.failures
    assert result.summary.units_done == 6 and result.summary.retries == 0
    assert result.summary.frames_per_encoder_batch > 1.5  # frames really were batched
    assert_same_rows(sorted_masks(out), expected)


def test_output_holding_another_labeling_of_the_same_objects_is_refused(
    inputs, mini_a_dir, tmp_path
):
    """Labeling into an output that another model (or other prompts) already wrote would give
    two masks per object and frame; the run stops before any work, naming the clash."""
    _, manifest = inputs
    video_id = json.loads(Path(manifest).read_text().splitlines()[0])["video_id"]
    out = tmp_path / "out"
    store = OutputStore(str(out))
    meta = {"video_id": video_id, "object_ids": [1], "model": "older-model@0123456789ab"}
    store.commit_unit(f"{video_id}-0123456789abcdef01234567", MASK_SCHEMA.empty_table(), meta)
    with pytest.raises(RunFatalError, match=f"{video_id}.*older-model@0123456789ab.*new --output"):
        run_labeling(run_config(manifest, out, mini_a_dir))
    assert list((out / "masks").iterdir()) == [
        out / "masks" / f"{video_id}-0123456789abcdef01234567.parquet"
    ]
