"""The video tracker: batching equals tracking alone, bounded state, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_core.frames import ArrayFrames
from sam2_core.synthetic import SyntheticConfig, first_click, generate_video
from sam2_core.tracker import (
    ObjectPrompt,
    TrackerOptions,
    VideoSession,
    track_session,
)


@pytest.fixture(scope="module")
def long_case(mini_a_dir):
    return np.load(mini_a_dir / "long_case.npz")


def _prompt(session: VideoSession, kind: str, long_case) -> None:
    if kind == "click":
        session.add_points(0, 1, [[38.4, 33.6]], [1])
    elif kind == "box":
        session.add_box(3, 2, [70.4, 43.2, 108.8, 76.8])
    else:
        session.add_mask(20, 3, long_case["in.mask"])


def _run(mini, long_case, kinds, batch=True):
    session = VideoSession(
        mini, ArrayFrames(long_case["frames"]), TrackerOptions(batch_objects=batch)
    )
    for kind in kinds:
        _prompt(session, kind, long_case)
    out = {}
    for res in session.propagate(start_frame=0):
        for i, oid in enumerate(res.object_ids):
            out[("fwd", res.frame_index, oid)] = res.mask_logits[i]
    for res in session.propagate(start_frame=39, reverse=True):
        for i, oid in enumerate(res.object_ids):
            out[("rev", res.frame_index, oid)] = res.mask_logits[i]
    return out


def test_batched_objects_equal_each_object_tracked_alone(mini, long_case):
    kinds = ["click", "box", "mask"]  # different conditioning frames: ragged, padded memories
    together = _run(mini, long_case, kinds)
    alone = {}
    for kind in kinds:
        alone.update(_run(mini, long_case, [kind]))
    assert together.keys() == alone.keys()
    assert len(together) == 2 * 40 * 3
    worst, flips, total = 0.0, 0, 0
    for key, a in together.items():
        b = alone[key]
        worst = max(worst, float((a - b).abs().max()))
        flips += int(((a > 0) != (b > 0)).sum())
        total += a.numel()
        assert bool((a == -1024).all()) == bool((b == -1024).all()), key
    assert worst < 1e-3
    assert flips <= total * 1e-5


def test_batched_mode_equals_object_by_object_mode(mini, long_case):
    kinds = ["click", "box", "mask"]
    batched = _run(mini, long_case, kinds, batch=True)
    serial = _run(mini, long_case, kinds, batch=False)
    assert max(float((batched[k] - serial[k]).abs().max()) for k in batched) < 1e-3


@pytest.mark.slow
def test_streaming_state_stays_bounded_and_masks_match_keeping_everything(mini):
    video = generate_video(
        7, SyntheticConfig(height=64, width=96, num_frames=320, min_objects=3, max_objects=3)
    )
    start = 60
    prompts = []
    for k, oid in enumerate(video.object_ids):
        frame = start + k  # different conditioning frames per object
        if video.masks[k, frame].sum() == 0:
            frame = start
        x, y = first_click(video.masks[k, frame]) if video.masks[k, frame].any() else (48, 32)
        prompts.append(ObjectPrompt(oid, frame, points=np.array([[x, y]]), labels=np.array([1])))

    def run(bounded: bool):
        session = VideoSession(mini, ArrayFrames(video.frames))
        results, frames_held, bytes_held, order = {}, [], [], []
        for res in track_session(session, prompts, bounded=bounded):
            order.append(res.frame_index)
            results[res.frame_index] = res.mask_logits.clone()
            frames_held.append(session.stored_frames())
            bytes_held.append(session.stored_bytes())
        return results, frames_held, bytes_held, order

    kept, frames_b, bytes_b, order = run(bounded=True)
    full, frames_f, _, _ = run(bounded=False)

    n = len(video.frames)
    assert sorted(order) == list(range(n)), "every frame yielded exactly once"
    assert order[: n - start] == list(range(start, n)) and order[n - start :] == list(
        range(start - 1, -1, -1)
    )
    for t in range(n):
        assert torch.equal(kept[t], full[t]), (
            f"frame {t} differs from the run that keeps everything"
        )

    # Keeping everything grows with the video; the bounded run's state is capped by the
    # memory windows (conditioning frames + the pointer window + the reverse pass's seed).
    assert frames_f[-1] >= 3 * (n - 3)
    bound_frames = 3 * (3 + 2 * 16 + 2)
    assert max(frames_b) <= bound_frames
    first_half, second_half = bytes_b[20 : n // 2], bytes_b[n // 2 :]
    assert max(second_half) <= max(first_half), (
        "state must not grow with the number of frames tracked"
    )


def test_bad_calls_raise_clear_errors_and_leave_the_session_usable(mini, long_case):
    frames = ArrayFrames(long_case["frames"][:6])
    session = VideoSession(mini, frames)
    with pytest.raises(IndexError, match="out of range"):
        session.add_points(6, 1, [[10, 10]], [1])
    with pytest.raises(ValueError, match="points and labels"):
        session.add_prompt(0, 1, points=[[10, 10]])
    with pytest.raises(ValueError, match="one entry per point"):
        session.add_points(0, 1, [[10, 10], [20, 20]], [1])
    with pytest.raises(ValueError, match="0 \\(background\\) or 1"):
        session.add_points(0, 1, [[10, 10]], [7])
    session.add_points(0, 1, [[38.4, 33.6]], [1])
    with pytest.raises(ValueError, match="box must come first"):
        session.add_prompt(0, 1, box=[70, 43, 108, 76], clear_old=False)
    with pytest.raises(KeyError, match="unknown object id 9"):
        session.remove_object(9)
    with pytest.raises(KeyError, match="unknown object id 9"):
        session.clear_prompts(0, 9)
    with pytest.raises(ValueError, match="object ids must be integers"):
        session.add_points(0, "cat", [[1, 1]], [1])
    with pytest.raises(ValueError, match="2-D"):
        session.add_mask(0, 2, np.zeros((2, 3, 4), bool))
    with pytest.raises(IndexError):
        list(session.propagate(start_frame=99))

    after_errors = [r.mask_logits for r in session.propagate()]
    fresh = VideoSession(mini, frames)
    fresh.add_points(0, 1, [[38.4, 33.6]], [1])
    expected = [r.mask_logits for r in fresh.propagate()]
    assert len(after_errors) == len(expected) == 6
    assert all(torch.equal(a, b) for a, b in zip(after_errors, expected))


def test_track_video_rejects_prompts_past_the_end(mini, long_case):
    session = VideoSession(mini, ArrayFrames(long_case["frames"][:5]))
    with pytest.raises(ValueError, match="past the video's end"):
        list(
            track_session(
                session, [ObjectPrompt(1, 5, points=np.array([[1, 1]]), labels=np.array([1]))]
            )
        )


def test_clear_prompts_and_remove_object(mini, long_case):
    frames = ArrayFrames(long_case["frames"][:6])
    session = VideoSession(mini, frames)
    session.add_points(0, 1, [[38.4, 33.6]], [1])
    session.add_box(0, 2, [70.4, 43.2, 108.8, 76.8])
    session.remove_object(2)
    assert session.object_ids == [1]
    results = list(session.propagate())
    assert [r.object_ids for r in results] == [[1]] * 6
    session.clear_prompts(0, 1)
    with pytest.raises(ValueError, match="no conditioning frame|no prompts"):
        list(session.propagate())


def test_frames_are_read_ahead_on_a_thread_only_when_the_model_is_on_a_gpu(mini):
    """On a CPU the read-ahead thread competes with torch's threads for the cores (about half
    the speed on two cores, docs/PERFORMANCE.md): the default reads ahead only for a GPU."""
    frames = ArrayFrames(np.zeros((3, 32, 32, 3), dtype=np.uint8))
    assert VideoSession(mini, frames, TrackerOptions())._reader.depth == 0
    assert VideoSession(mini, frames, TrackerOptions(prefetch_frames=2))._reader.depth == 2
