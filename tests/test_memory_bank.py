"""The memory bank: training's clip forward and the tracker go through the same memory path,
and the retention rule keeps exactly what the memory rule can still read."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2_core import build_model
from sam2_core.demo_model import DEMO_SYNTHETIC_CONFIG, build_demo_model
from sam2_core.frames import ArrayFrames
from sam2_core.memory_rule import Keep, reach, retention, select_memory
from sam2_core.synthetic import first_click, generate_video
from sam2_core.tracker import VideoSession
from sam2_core.training import ClipForward, PromptOptions, make_batch
from sam2_core.training.clips import Clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_forward_in_eval_mode_equals_the_tracker_on_every_frame():
    model = build_demo_model()  # trained: confident masks, so the comparison has teeth
    assert (
        model.cfg.tracking.fill_hole_area == 0
    )  # hole filling post-processes tracker outputs only
    num_frames, size = (
        12,
        model.image_size,
    )  # longer than the spatial memory window (num_maskmem = 7)
    synth = replace(DEMO_SYNTHETIC_CONFIG, num_frames=num_frames, min_objects=2, max_objects=2)
    video = generate_video(3, synth)
    batch = make_batch([Clip(video.frames, video.masks)], size)
    assert batch.num_objects == 2

    fixed = PromptOptions(
        box_prob=0.0,
        mask_prob=0.0,
        exact_click_prob=1.0,
        max_corrections=0,
        correct_later_prob=0.0,
        pointer_frames=num_frames,
    )
    with torch.no_grad():
        steps = ClipForward(model, fixed)(batch, np.random.default_rng(0))
    assert [s.frame for s in steps] == list(range(num_frames))

    session = VideoSession(model, ArrayFrames(video.frames))
    for oid, masks in enumerate(batch.masks.numpy() > 0.5):
        session.add_points(0, oid, [first_click(masks[0])], [1])
    results = list(session.propagate(0))
    assert [r.frame_index for r in results] == list(range(num_frames))

    for step, result in zip(steps, results, strict=True):
        best = step.ious.argmax(dim=1)
        trained = step.multimasks[torch.arange(2), best]
        tracked = result.mask_logits
        assert not bool((tracked == -1024).all()), "the check needs objects judged present"
        assert float(tracked.abs().max()) > 1.0, "the check needs confident masks"
        # float32 logits run to ~20: 1e-5 absolute plus 1e-5 relative (a few ulps)
        assert torch.allclose(trained, tracked, atol=1e-5, rtol=1e-5), (
            step.frame,
            float((trained - tracked).abs().max()),
        )
        assert torch.allclose(step.object_logits[:, 0], result.object_score_logits, atol=1e-5)


def test_retention_keeps_every_memory_the_rule_can_still_select(mini_a_dir):
    cfg = build_model(str(mini_a_dir / "config.json")).cfg.tracking
    spatial, pointers = reach(cfg)
    num_frames, cond = 200, [50]
    for reverse in (False, True):
        for current in range(60, 140):
            kept = {t: retention(t, current, reverse, cfg) for t in range(num_frames)}
            stored = {t for t, k in kept.items() if k is not Keep.NOTHING}
            # What the next frame selects must still be stored, whole where it is a spatial memory.
            nxt = current - 1 if reverse else current + 1
            sel = select_memory(nxt, cond, lambda t, s=stored: t in s, num_frames, reverse, cfg)
            assert all(kept[t] is Keep.ALL for t, _, c in sel.spatial if not c)
            assert all(t in stored for t, _, c in sel.pointers if not c)
            assert len(stored) <= max(spatial, pointers) + 1
    # A reverse pass still to come from frame 50 reads the frames just after it.
    assert retention(55, 120, False, cfg, reverse_from=50) is Keep.ALL
    assert retention(55, 120, False, cfg) is Keep.NOTHING
