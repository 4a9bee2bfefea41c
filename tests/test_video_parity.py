"""Video parity: the session API replays the official video and long cases within tolerance."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sam2_core import parity


@pytest.fixture(scope="module")
def replayed(mini_a_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_parity")
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_core.parity", "replay", str(mini_a_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("case", ["video_case", "long_case"])
def test_compare_passes_on_video_cases(replayed, mini_a_dir, case):
    assert (replayed / f"{case}.npz").exists()
    results = {r.name: r for r in parity.compare(mini_a_dir, replayed)}
    result = results[f"{case}.npz"]
    assert result.passed, parity.format_case(result)


def test_compare_cli_exits_zero_on_the_replay(replayed, mini_a_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_core.parity", "compare", str(mini_a_dir), str(replayed)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout


def test_compare_fails_when_an_object_turns_absent(replayed, mini_a_dir, tmp_path):
    ours = dict(np.load(replayed / "video_case.npz"))
    key = "p1.f5.o1"
    ours[key] = np.full_like(ours[key], -1024.0)
    np.savez(tmp_path / "video_case.npz", **ours)
    results = {r.name: r for r in parity.compare(mini_a_dir, tmp_path)}
    assert not results["video_case.npz"].passed
