"""SharedEncoder: sessions on several threads get their frames encoded in shared batches, with
the same masks as when each video is tracked alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from sam2_core.frames import ArrayFrames
from sam2_core.shared_encoder import SharedEncoder
from sam2_core.tracker import ObjectPrompt, track_video


def _jobs(mini_a_dir):
    long_frames = np.load(mini_a_dir / "long_case.npz")["frames"]
    video = np.load(mini_a_dir / "video_case.npz")["frames"]
    click = ObjectPrompt(1, 3, points=np.array([[38.4, 33.6]]), labels=np.array([1]))
    box = ObjectPrompt(1, 0, box=np.array([70.4, 43.2, 108.8, 76.8]))
    return [
        (ArrayFrames(long_frames[:12]), [click]),
        (
            ArrayFrames(video),
            [box, ObjectPrompt(2, 2, points=np.array([[30, 30]]), labels=np.array([1]))],
        ),
        (ArrayFrames(long_frames[20:30]), [box]),
    ]


def _track_on_threads(model, jobs, encoder):
    results: list[dict] = [{} for _ in jobs]
    errors: list[BaseException] = []

    def work(i):
        frames, prompts = jobs[i]
        try:
            with torch.inference_mode(), encoder.user():
                for r in track_video(model, frames, prompts, encoder=encoder):
                    results[i][r.frame_index] = r.mask_logits
        except BaseException as err:  # surfaced by the test
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results, errors


def test_threads_sharing_an_encoder_get_the_masks_of_separate_runs(mini, mini_a_dir):
    jobs = _jobs(mini_a_dir)
    encoded_alone = []

    def counting(image):
        encoded_alone.append(image.shape[0])
        return mini.encode_image(image)

    with torch.inference_mode():
        alone = [
            {r.frame_index: r.mask_logits for r in track_video(mini, f, p, encoder=counting)}
            for f, p in jobs
        ]
    encoder = SharedEncoder(mini, max_batch=3, max_wait_s=0.5)
    together, errors = _track_on_threads(mini, jobs, encoder)
    assert not errors, errors
    for i in range(len(jobs)):
        assert sorted(together[i]) == sorted(alone[i])
        for t in alone[i]:
            assert torch.allclose(together[i][t], alone[i][t], atol=1e-5), (i, t)
    # The same frames encoded (the reverse pass re-reads its start frame), many in shared batches.
    assert encoder.images == len(encoded_alone) > sum(len(f) for f, _ in jobs)
    assert encoder.images / encoder.batches > 1.5


def test_an_idle_session_delays_the_others_by_at_most_the_wait(mini, mini_a_dir):
    frames, prompts = _jobs(mini_a_dir)[2]
    encoder = SharedEncoder(mini, max_batch=4, max_wait_s=0.05)
    with torch.inference_mode(), encoder.user(), encoder.user():  # a second user that never asks
        started = time.perf_counter()
        out = list(track_video(mini, frames, prompts, encoder=encoder))
        took = time.perf_counter() - started
    assert len(out) == len(frames)
    assert encoder.batches == encoder.images == len(frames)
    assert took >= 0.05 * len(frames)  # each frame waited for the idle user, then went alone


class _FailingModel:
    def __init__(self):
        self.calls = 0

    def encode_image(self, images):
        self.calls += 1
        time.sleep(0.05)
        raise RuntimeError(f"encoder failed on a batch of {images.shape[0]}")


def test_an_encoder_error_reaches_every_session_of_the_batch():
    model = _FailingModel()
    encoder = SharedEncoder(model, max_batch=3, max_wait_s=1.0)
    errors: list[str] = []

    def ask():
        with encoder.user():
            try:
                encoder(torch.zeros(1, 3, 8, 8))
            except RuntimeError as err:
                errors.append(str(err))

    with encoder.user(), encoder.user(), encoder.user():  # three users: the batch waits for all
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert errors == ["encoder failed on a batch of 3"] * 3
    assert model.calls == 1


def test_bad_arguments_are_refused(mini):
    with pytest.raises(ValueError, match="max_batch"):
        SharedEncoder(mini, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        SharedEncoder(mini, max_wait_s=-1)
    with pytest.raises(ValueError, match="one image at a time"):
        SharedEncoder(mini)(torch.zeros(2, 3, 256, 256))
