"""The tracker on GPU terms, checked on the CPU: host syncs per frame, object chunks and the
retry after running out of device memory, stable shapes for compiled parts, and buffers that
do not keep more alive than they show."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sam2_core import transfer
from sam2_core.frames import ArrayFrames
from sam2_core.prompts import ObjectPrompt
from sam2_core.shared_encoder import SharedEncoder
from sam2_core.tracker import TrackerOptions, VideoSession, track_session

# --- counting what would make the host wait for a CUDA device ----------------------------------

_DATA_DEPENDENT = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "unique",
    "_unique2",
    "is_nonzero",
    "equal",
}
_SCALAR_READS = {"item", "__float__", "__int__", "__bool__", "__index__"}
_HOST_READS = {"cpu", "numpy", "tolist"}


def _names_device(args, kwargs) -> bool:
    if "device" in kwargs:
        return True
    return any(isinstance(a, (str, torch.device)) for a in args[1:])


class _Functions(TorchFunctionMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _SCALAR_READS:  # seen here: under inference_mode they skip the dispatcher
            self.counter.hit(name)
            self.counter.reading = True
            try:
                return func(*args, **kwargs)
            finally:
                self.counter.reading = False
        if name in _HOST_READS:
            self.counter.hit(name)
        elif (
            name in ("to", "copy_")
            and not kwargs.get("non_blocking", False)
            and _names_device(args, kwargs)
        ):
            self.counter.hit(f"blocking {name}")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
            self.counter.hit(f"pageable {name}")
        return func(*args, **kwargs)


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _DATA_DEPENDENT and not self.counter.reading:
            self.counter.hit(name)
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """Counts the operations that would make the host wait for a CUDA device, on any device:
    scalar reads and data-dependent shapes (``item``/``float``/``bool`` of a tensor,
    ``nonzero``...), reads of host data (``.cpu()``, ``.numpy()``, ``.tolist()``), copies that
    name a device without ``non_blocking=True``, and tensors built from Python data directly on a
    device. On the CPU a copy between devices cannot be told from a no-op, so every blocking
    copy counts (the conservative reading)."""

    def __init__(self):
        self.count = 0
        self.kinds: dict[str, int] = {}
        self.reading = False  # inside a scalar read already counted

    def hit(self, kind: str) -> None:
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def __enter__(self):
        self._modes = (_Functions(self), _Dispatch(self))
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def _video(num_frames: int = 4, seed: int = 0) -> ArrayFrames:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, 48, 64, 3), dtype=np.uint8)
    for t in range(num_frames):  # a few bright squares that drift
        for k in range(4):
            y, x = 4 + 10 * k, 4 + 12 * k + 2 * t
            frames[t, y : y + 8, x : x + 10] = 200 + 10 * k
    return ArrayFrames(frames)


def _clicks(n: int, frames_with_prompts: tuple[int, ...] = (0,)) -> list[ObjectPrompt]:
    prompts = []
    for oid in range(n):
        frame = frames_with_prompts[oid % len(frames_with_prompts)]
        prompts.append(
            ObjectPrompt(
                oid, frame, points=[[6.0 + 3 * (oid % 16), 8.0 + 2 * (oid % 10)]], labels=[1]
            )
        )
    return prompts


@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offloaded"])
@pytest.mark.parametrize("num_objects", [1, 4, 16])
def test_tracking_a_frame_waits_for_the_device_at_most_twice(
    mini, num_objects, offload, monkeypatch
):
    # Frames are read and preprocessed on the prefetch thread (host work, not counted: the
    # modes count on this thread only); their upload is counted. The shortcuts that read
    # values where that is free (on the CPU: constant masks) are off, as on a device.
    monkeypatch.setattr(transfer, "values_free_to_read", lambda device: False)
    options = TrackerOptions(storage_device="cpu" if offload else None, prefetch_frames=2)
    session = VideoSession(mini, _video(5), options)
    for p in _clicks(num_objects):
        session.add(p)
    frames = session.propagate(0)
    next(frames)  # the prompted frame: committing prompts is not per-frame work
    per_frame = []
    for _ in range(4):
        with SyncCounter() as counter:
            result = next(frames)
            out = result.download()
        per_frame.append(counter.count)
        assert out.masks.shape == (num_objects, 48, 64) and out.masks.dtype == np.bool_
    frames.close()
    assert max(per_frame) <= 2, (per_frame, counter.kinds)


def test_download_matches_the_logits_it_thresholds(mini):
    session = VideoSession(mini, _video(3), TrackerOptions(prefetch_frames=0))
    for p in _clicks(3):
        session.add(p)
    for result in session.propagate(0):
        out = result.download()
        logits = result.mask_logits
        assert np.array_equal(out.masks, (logits > 0).numpy())
        assert np.allclose(out.object_score_logits, result.object_score_logits.numpy())
        assert np.array_equal(out.present, result.object_score_logits.numpy() > 0)
        assert np.allclose(out.ious, result.ious.numpy())
        assert out.object_ids == [0, 1, 2]


# --- object chunks and running out of memory ----------------------------------------------------


def _track_all(
    model, options: TrackerOptions, num_objects: int = 5, num_frames: int = 4, prompted=(0, 1)
):
    """By default objects are prompted on two frames: their memories differ in length
    (padded, masked)."""
    session = VideoSession(model, _video(num_frames, seed=1), options)
    outputs = {
        r.frame_index: r.mask_logits for r in track_session(session, _clicks(num_objects, prompted))
    }
    return outputs, session


@pytest.mark.parametrize("chunk", [1, 2])
def test_object_chunks_give_the_outputs_of_one_batch(mini, chunk):
    whole, whole_session = _track_all(mini, TrackerOptions(prefetch_frames=0))
    chunked, session = _track_all(mini, TrackerOptions(prefetch_frames=0, object_chunk=chunk))
    assert whole_session.stats.object_chunk == 5 and whole_session.stats.max_chunks_per_frame == 1
    assert session.stats.object_chunk == chunk and session.stats.max_chunks_per_frame == -(
        -5 // chunk
    )
    assert whole.keys() == chunked.keys()
    # within 1e-5 of the logit's size: padded (masked) and unpadded attention sum in other orders
    for t in whole:
        assert torch.allclose(whole[t], chunked[t], rtol=1e-5, atol=1e-5), t


def test_a_frame_out_of_device_memory_is_redone_with_half_the_chunk(mini, monkeypatch):
    expected, _ = _track_all(mini, TrackerOptions(prefetch_frames=0), prompted=(0,))
    attention = mini.memory_attention
    original = attention.forward
    raised = []

    def once_too_big(*args, **kwargs):
        memory = args[2]
        if not raised and memory.shape[0] > 2:
            raised.append(memory.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "forward", once_too_big)
    got, session = _track_all(mini, TrackerOptions(prefetch_frames=0), prompted=(0,))
    assert raised == [5]
    assert session.stats.oom_retries == 1 and session.stats.object_chunk == 2
    assert session.stats.max_chunks_per_frame == 3
    assert session.stats.oom_chunks == [2]
    assert (session.stats.largest_chunk, session.stats.smallest_chunk) == (5, 2)
    for t in expected:
        assert torch.allclose(expected[t], got[t], rtol=1e-5, atol=1e-5), t


def test_running_out_of_memory_with_one_object_per_chunk_is_an_error(mini, monkeypatch):
    def always(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(mini.memory_attention, "forward", always)
    with pytest.raises(torch.OutOfMemoryError):
        _track_all(mini, TrackerOptions(prefetch_frames=0, object_chunk=1))


def test_object_chunk_must_be_positive():
    with pytest.raises(ValueError, match="object_chunk"):
        TrackerOptions(object_chunk=0)


# --- stable shapes ------------------------------------------------------------------------------


def test_stable_shapes_change_no_output(mini):
    plain, _ = _track_all(mini, TrackerOptions(prefetch_frames=0))
    stable, session = _track_all(
        mini, TrackerOptions(prefetch_frames=0, stable_shapes=True, object_chunk=4)
    )
    assert session.stable_shapes
    for t in plain:
        assert torch.allclose(plain[t], stable[t], rtol=1e-5, atol=1e-5), t


def _compile_twenty_videos(model_dir, device: str, caplog) -> float:
    """20 videos, 1 to 6 objects prompted on one or two frames, 3 to 5 frames each, through a
    compiled and an eager copy of the model; asserts no recompile-limit message, returns the
    largest logit difference."""
    from sam2_core.build import build_model

    torch._dynamo.reset()
    paths = (str(model_dir / "config.json"), str(model_dir / "checkpoint.pt"))
    eager = build_model(paths[0], checkpoint=paths[1]).to(device)
    compiled = build_model(paths[0], checkpoint=paths[1]).to(device)
    compiled.compile_hot_parts()
    rng = np.random.default_rng(3)
    worst = 0.0
    caplog.set_level(logging.WARNING, logger="torch._dynamo")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for v in range(20):
                n = int(rng.integers(1, 7))
                length = int(rng.integers(3, 6))
                prompts = _clicks(n, (0,) if v % 2 else (0, 1))
                options = TrackerOptions(prefetch_frames=0)
                runs = []
                for model in (eager, compiled):
                    session = VideoSession(model, _video(length, v), options)
                    runs.append(
                        {r.frame_index: r.mask_logits for r in track_session(session, prompts)}
                    )
                worst = max(
                    worst, max(float((runs[0][t] - runs[1][t]).abs().max()) for t in runs[0])
                )
    finally:
        torch._dynamo.reset()
    messages = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    limit_hits = [m for m in messages if "cache_size_limit" in m or "recompile_limit" in m]
    assert not limit_hits, limit_hits[:3]
    return worst


@pytest.mark.slow
def test_compiled_parts_are_not_recompiled_to_death_over_twenty_varied_videos(mini_a_dir, caplog):
    """The compiled model never hits Dynamo's recompile limit and agrees with eager to 1e-4."""
    assert _compile_twenty_videos(mini_a_dir, "cpu", caplog) < 1e-4


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_compiled_parts_on_cuda_are_not_recompiled_to_death(mini_a_dir, caplog):
    assert (
        _compile_twenty_videos(mini_a_dir, "cuda", caplog) < 1e-3
    )  # TF32 / kernel choice may differ


@pytest.mark.gpu
@needs_cuda
def test_download_on_cuda_matches_the_logits(mini_a_dir):
    from sam2_core.build import build_model

    model = build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    ).to("cuda")
    for offload in (None, "cpu"):
        session = VideoSession(model, _video(4), TrackerOptions(storage_device=offload))
        for result in track_session(session, _clicks(5)):
            out = result.download()
            assert np.array_equal(out.masks, (result.mask_logits > 0).numpy())
            assert np.allclose(out.ious, result.ious.cpu().numpy())


# --- buffers that keep more alive than they show -------------------------------------------------


def test_shared_encoder_results_do_not_hold_the_whole_batch(mini):
    import contextlib
    import threading

    encoder = SharedEncoder(mini, max_batch=4, max_wait_s=30.0)
    results: list = [None] * 4

    def run(i):
        with torch.inference_mode():
            results[i] = encoder(torch.randn(1, 3, mini.image_size, mini.image_size))

    with contextlib.ExitStack() as users:
        for _ in range(4):  # four sessions: a batch forms once all four have asked
            users.enter_context(encoder.user())
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert encoder.batches == 1 and encoder.images == 4
    for feats in results:
        for x in feats.levels + feats.pos:
            assert x.untyped_storage().nbytes() == x.numel() * x.element_size()
