"""Encoding frame t+1 on a second lane while frame t is tracked (sam2_core.encode_ahead): the
same outputs as encoding in turn, forward and in reverse; the lane runs on another thread with
a traced encoder; torch's thread count comes back however the propagation ends; and the
automatic rule picks it only where it pays (a two-thread CPU, few objects, float32)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sam2_core import encode_ahead, tracker
from sam2_core.encode_ahead import (
    ENCODE_AHEAD_MAX_OBJECTS,
    NARROW_MAX_OBJECTS,
    encode_ahead_wanted,
    traced_encoder,
)
from sam2_core.frames import ArrayFrames
from sam2_core.tracker import ObjectPrompt, TrackerOptions, VideoSession, track_session


@pytest.fixture(scope="module")
def frames(mini_a_dir):
    return np.load(mini_a_dir / "long_case.npz")["frames"][:10]


def _prompts(n: int, frame: int) -> list[ObjectPrompt]:
    return [
        ObjectPrompt(k + 1, frame, points=[[30.0 + 12 * k, 40.0 + 6 * k]], labels=[1])
        for k in range(n)
    ]


def _run(mini, frames, n: int, frame: int, ahead: bool):
    session = VideoSession(mini, ArrayFrames(frames), TrackerOptions(encode_ahead=ahead))
    out = {r.frame_index: r.low_res.clone() for r in track_session(session, _prompts(n, frame))}
    return out, session.stats


@pytest.mark.parametrize("n", [1, 2, 5])
def test_encoding_ahead_gives_the_outputs_of_encoding_in_turn_forward_and_in_reverse(
    mini, frames, n
):
    threads = torch.get_num_threads()
    plain, plain_stats = _run(mini, frames, n, frame=4, ahead=False)
    ahead, stats = _run(mini, frames, n, frame=4, ahead=True)
    assert sorted(ahead) == sorted(plain) == list(range(len(frames)))
    for t in plain:
        # One torch thread instead of two sums in another order: float noise, no mask changes.
        torch.testing.assert_close(ahead[t], plain[t], rtol=1e-4, atol=1e-4)
        assert torch.equal(ahead[t] > 0, plain[t] > 0), t
    # Forward 4..9 and reverse 4..0: every frame after each start came from the lane.
    assert stats.frames_encoded_ahead == (len(frames) - 1 - 4) + 4
    assert plain_stats.frames_encoded_ahead == 0
    assert torch.get_num_threads() == threads


def test_the_lane_encodes_on_another_thread_with_one_torch_thread_each(mini, frames, monkeypatch):
    seen: list[tuple[int, int]] = []
    traced = traced_encoder(mini)

    def spy(model):
        def encode(images):
            seen.append((threading.get_ident(), torch.get_num_threads()))
            return traced(images)

        return encode

    monkeypatch.setattr(tracker, "traced_encoder", spy)
    session = VideoSession(mini, ArrayFrames(frames), TrackerOptions(encode_ahead=True))
    session.add(_prompts(1, 0)[0])
    during = [torch.get_num_threads() for _ in session.propagate(0)]
    main = threading.get_ident()
    assert len(seen) == len(frames) - 1
    assert all(ident != main and n == 1 for ident, n in seen), seen
    assert set(during) == {1}


@pytest.mark.parametrize("n", [NARROW_MAX_OBJECTS, NARROW_MAX_OBJECTS + 1])
def test_with_several_objects_the_tracking_lane_takes_its_threads_back_after_memory_attention(
    mini, frames, monkeypatch, n
):
    """Each frame's memory attention starts on one thread while the lane still encodes the
    next frame (held until then); the memory encoder runs on two threads if there are more
    than NARROW_MAX_OBJECTS objects, else still on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    permits, encoded = threading.Semaphore(0), threading.Event()
    traced = traced_encoder(mini)
    lane_calls = []

    def held(model):
        def encode(images):
            lane_calls.append(1)
            if len(lane_calls) > 1:  # frame 1 is needed before any memory attention runs
                assert permits.acquire(timeout=30)
            feats = traced(images)
            encoded.set()
            return feats

        return encode

    session = VideoSession(mini, ArrayFrames(frames), TrackerOptions(encode_ahead=True))
    at_attention, at_encoder = [], []

    def attention_starts(*_):
        pending = list(session._lane._pending.values())
        at_attention.append((torch.get_num_threads(), bool(pending)))
        if pending:
            encoded.clear()
            permits.release()
            assert encoded.wait(30)
            while not all(f.done() for f in pending):
                threading.Event().wait(0.001)

    monkeypatch.setattr(tracker, "traced_encoder", held)
    hooks = [
        mini.memory_attention.register_forward_pre_hook(attention_starts),
        mini.memory_encoder.register_forward_pre_hook(
            lambda *_: at_encoder.append(torch.get_num_threads())
        ),
    ]
    try:
        session.add_all(_prompts(n, 0))  # its memories are encoded as the propagation starts
        results = list(session.propagate(0))
    finally:
        for hook in hooks:
            hook.remove()
        torch.set_num_threads(threads)
    assert len(results) == len(frames) and len(at_encoder) == len(frames)
    held_frames = [t for t, pending in at_attention if pending]
    assert len(held_frames) == len(frames) - 2 and set(held_frames) == {1}
    expected = 2 if n > NARROW_MAX_OBJECTS else 1
    assert set(at_encoder[1:]) == {expected}, at_encoder  # the first: the prompts' memories


def test_a_widening_lane_gives_the_same_numbers_every_run(mini, frames):
    """The tracking thread widens at a module, not when the lane happens to finish, so every
    operation runs on the same number of threads from one run to the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, _ = _run(mini, frames, NARROW_MAX_OBJECTS + 1, frame=0, ahead=True)
        second, _ = _run(mini, frames, NARROW_MAX_OBJECTS + 1, frame=0, ahead=True)
    finally:
        torch.set_num_threads(threads)
    assert sorted(first) == sorted(second) == list(range(len(frames)))
    for t in first:
        assert torch.equal(first[t], second[t]), t


def test_thread_count_and_lane_are_restored_when_the_caller_stops_early(mini, frames):
    threads = torch.get_num_threads()
    session = VideoSession(mini, ArrayFrames(frames), TrackerOptions(encode_ahead=True))
    session.add(_prompts(1, 0)[0])
    walk = session.propagate(0)
    next(walk)
    next(walk)
    walk.close()  # the lane still has the next frame pending
    assert torch.get_num_threads() == threads
    assert session._lane is None
    assert [t for t in threading.enumerate() if t.name.startswith("encode-ahead")] == []
    # The session still works afterwards, without the lane.
    results = list(session.propagate(0, max_frames=3))
    assert [r.frame_index for r in results] == [0, 1, 2, 3]


def test_the_traced_encoder_matches_the_eager_one_and_follows_weight_updates(mini_a_dir):
    from sam2_core import build_model

    model = build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )
    images = torch.rand(1, 3, model.image_size, model.image_size)
    traced = traced_encoder(model)
    assert traced_encoder(model) is traced  # made once per model
    outputs = []
    for _ in range(2):
        with torch.inference_mode():
            eager, got = model.encode_image(images), traced(images)
        for a, b in zip(eager.levels + eager.pos, got.levels + got.pos, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
        outputs.append(got.levels[-1])
        with torch.no_grad():  # change weights in place: the trace must see the new ones
            model.image_encoder.trunk.patch_embed.proj.weight.mul_(1.5)
            model.image_encoder.trunk.pos_embed.add_(0.25)
    assert not torch.allclose(outputs[0], outputs[1])


def test_automatic_rule_picks_the_lane_only_where_it_pays(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(encode_ahead.torch, "get_num_threads", lambda: 2)
    assert encode_ahead_wanted(None, cpu, 1, custom_encoder=False, autocast=False)
    assert encode_ahead_wanted(
        None, cpu, ENCODE_AHEAD_MAX_OBJECTS, custom_encoder=False, autocast=False
    )
    assert not encode_ahead_wanted(
        None, cpu, ENCODE_AHEAD_MAX_OBJECTS + 1, custom_encoder=False, autocast=False
    )
    assert not encode_ahead_wanted(None, cuda, 1, custom_encoder=False, autocast=False)
    assert not encode_ahead_wanted(None, cpu, 1, custom_encoder=True, autocast=False)
    assert not encode_ahead_wanted(None, cpu, 1, custom_encoder=False, autocast=True)
    assert not encode_ahead_wanted(
        None, cpu, 1, custom_encoder=False, autocast=False, compiled=True
    )
    assert encode_ahead_wanted(True, cuda, 9, custom_encoder=True, autocast=True)
    assert not encode_ahead_wanted(False, cpu, 1, custom_encoder=False, autocast=False)
    assert not encode_ahead_wanted(
        True, cpu, 1, custom_encoder=False, autocast=False, training=True
    )
    for threads in (1, 4, 16):
        monkeypatch.setattr(encode_ahead.torch, "get_num_threads", lambda t=threads: t)
        assert not encode_ahead_wanted(None, cpu, 1, custom_encoder=False, autocast=False)


def test_a_model_in_training_mode_is_left_in_it_and_encoded_in_turn(mini_a_dir, frames):
    from sam2_core import build_model

    model = build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )
    model.train()
    session = VideoSession(model, ArrayFrames(frames), TrackerOptions(encode_ahead=True))
    session.add(_prompts(1, 0)[0])
    assert len(list(session.propagate(0, max_frames=3))) == 4
    assert model.training and all(m.training for m in model.modules())
    assert session.stats.frames_encoded_ahead == 0


def test_a_forced_lane_keeps_the_sessions_autocast(mini, frames):
    """Forced on under autocast, the lane runs the session's encoder under the same autocast
    (entered on the lane's thread) rather than the float32 trace."""
    options = dict(autocast_dtype=torch.bfloat16)
    masks = {}
    calls: list[tuple[bool, bool]] = []  # (on the lane's thread, under autocast)
    for ahead in (False, True):
        session = VideoSession(
            mini, ArrayFrames(frames), TrackerOptions(encode_ahead=ahead, **options)
        )
        encode = session._encode

        def spy(images, encode=encode):
            lane = threading.current_thread().name.startswith("encode-ahead")
            calls.append((lane, torch.is_autocast_enabled("cpu")))
            return encode(images)

        session._encode = spy
        outs = [r.low_res for r in track_session(session, _prompts(1, 0))]
        masks[ahead] = torch.cat(outs) > 0
        assert session.stats.frames_encoded_ahead == (len(frames) - 1 if ahead else 0)
    assert (True, True) in calls and all(under for _, under in calls)
    inter = (masks[True] & masks[False]).sum()
    union = (masks[True] | masks[False]).sum()
    assert union > 0 and inter / union > 0.99


def test_a_model_that_tracked_with_the_lane_still_pickles_and_a_copy_traces_its_own_weights(
    mini_a_dir, frames
):
    import copy
    import io

    from sam2_core import build_model

    model = build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )
    session = VideoSession(model, ArrayFrames(frames), TrackerOptions(encode_ahead=True))
    session.add(_prompts(1, 0)[0])
    list(session.propagate(0, max_frames=2))
    assert session.stats.frames_encoded_ahead == 2
    torch.save(model, io.BytesIO())  # nothing unpicklable left on the model
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.image_encoder.trunk.patch_embed.proj.weight.mul_(2.0)
    images = torch.rand(1, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        mine, theirs = traced_encoder(model)(images), traced_encoder(twin)(images)
        torch.testing.assert_close(theirs.levels[-1], twin.encode_image(images).levels[-1])
        torch.testing.assert_close(mine.levels[-1], model.encode_image(images).levels[-1])
    assert not torch.allclose(mine.levels[-1], theirs.levels[-1])
