"""Synthetic scene families: each video a function of family and seed, masks that are exactly
what was drawn (distractors and occlusion included), every family at any frame size, and
training on a mixture of families through ``jobs train --data families:...``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import tiny_tree

from jobs.__main__ import main as jobs_main
from pipeline.training.data import DataSpec, parse_data_spec
from sam2_core.synthetic import SyntheticConfig, generate_video
from sam2_core.synthetic_families import (
    FAMILIES,
    FamilyMixture,
    _Object,
    _render,
    _Scene,
    generate_family_video,
    held_out_families,
    parse_family_weights,
    training_families,
)
from sam2_core.training import SyntheticClips


def test_training_and_held_out_families_are_disjoint_and_cover_the_issues_scene():
    assert set(training_families()).isdisjoint(held_out_families())
    assert "blobs" in training_families()
    assert "shapes-on-texture" in held_out_families() and len(held_out_families()) >= 2
    issue = FAMILIES["shapes-on-texture"]
    assert (issue.height, issue.width) == (240, 320)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_video_is_a_function_of_its_seed(family):
    a = generate_family_video(family, 7, 64, 80, 6)
    b = generate_family_video(family, 7, 64, 80, 6)
    c = generate_family_video(family, 8, 64, 80, 6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("size", [(240, 320), (128, 128)])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_renders_at_any_size_with_consistent_masks(family, size):
    video = generate_family_video(family, 3, *size, num_frames=12)
    T = 12
    assert video.frames.shape == (T, *size, 3) and video.frames.dtype == np.uint8
    n = len(video.object_ids)
    assert n >= 1 and video.object_ids == list(range(1, n + 1)) and len(video.objects) == n
    assert video.masks.shape == video.amodal_masks.shape == (n, T, *size)
    assert video.masks.sum(axis=0).max() <= 1  # one object per pixel
    assert not (video.masks & ~video.amodal_masks).any()  # visible part of the whole shape
    assert (video.masks.reshape(n, T, -1).sum(-1).max(axis=1) >= 16).all()


def test_family_defaults_are_its_recorded_size():
    video = generate_family_video("shapes-on-texture", 0, num_frames=4)
    assert video.frames.shape == (4, 240, 320, 3)
    blobs = generate_family_video("blobs", 5)
    same = generate_video(5, SyntheticConfig(height=128, width=128, num_frames=48, max_objects=3))
    assert np.array_equal(blobs.frames, same.frames)


def _disc(x, y, radius, colour, T, labelled=True):
    return _Object(
        shape="ellipse",
        radial=np.ones(512),
        texture=lambda u, v: np.broadcast_to(np.array(colour, float), (len(u), 3)),
        center=np.array([[x + 3.0 * t, y] for t in range(T)]),
        scale=np.full(T, float(radius)),
        angle=np.zeros(T),
        labelled=labelled,
    )


def test_masks_are_exactly_the_pixels_drawn_for_each_object_behind_distractors():
    H, W, T = 40, 60, 5
    red, green, blue = (250, 0, 0), (0, 250, 0), (0, 0, 250)
    scene = _Scene(
        background=np.full((H, W, 3), 100.0),
        bg_velocity=np.zeros(2),
        # back to front: a labelled red disc, a labelled green disc over it, an unlabelled blue one
        objects=[
            _disc(15, 20, 10, red, T),
            _disc(25, 20, 8, green, T),
            _disc(22, 10, 6, blue, T, labelled=False),
        ],
        gain=np.ones(T),
        cast=np.ones((T, 3)),
        offset=np.zeros(T),
    )
    frames, labels, amodal, labelled = _render(scene, H, W, T)
    assert labelled == [0, 1]
    for k, colour in ((0, red), (1, green)):
        drawn = (frames == np.array(colour, np.float32)).all(-1)
        assert np.array_equal(labels == k + 1, drawn)
        assert (amodal[k] & ~drawn).any()  # partly hidden by a nearer object
    distractor = (frames == np.array(blue, np.float32)).all(-1)
    assert distractor.any() and not (labels[distractor] > 0).any()


def test_family_specs_parse_weights_and_name_unknown_families(tmp_path, capsys):
    assert parse_family_weights("blobs=2,randomised") == (("blobs", 2.0), ("randomised", 1.0))
    assert parse_data_spec("families:blobs=2,crowded") == DataSpec("families", "blobs=2,crowded")
    for bad, message in (
        ("families:nope", "unknown scene family 'nope'"),
        ("families:blobs=0", "> 0"),
    ):
        with pytest.raises(SystemExit):
            jobs_main(["train", "--config", "x", "--output", str(tmp_path / "o"), "--data", bad])
        assert message in capsys.readouterr().err


def test_a_mixture_picks_families_by_seed_and_feeds_training_clips():
    mixture = FamilyMixture((("blobs", 1.0), ("crowded", 1.0)), SyntheticConfig(64, 64, 8))
    picks = [mixture.family_of(s) for s in range(40)]
    assert set(picks) == {"blobs", "crowded"} and picks == [mixture.family_of(s) for s in range(40)]
    blobs_seed = picks.index("blobs")
    assert mixture(blobs_seed).frames.shape == (8, 64, 64, 3)
    source = SyntheticClips(SyntheticConfig(64, 64, 8), generate=mixture)
    clip = source.sample(np.random.default_rng(0), 4)
    assert clip.frames.shape[0] == 4 and clip.masks[:, 0].any()


def test_jobs_train_on_a_family_mixture_records_it(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"resolved": tiny_tree()}))
    out = tmp_path / "out"
    argv = ["train", "--config", str(config), "--output", str(out), "--data"]
    argv += ["families:blobs,randomised", "--steps", "2", "--batch-size", "2", "--clip-len", "2"]
    argv += ["--warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "2"]
    assert jobs_main(argv) == 0
    assert "families:blobs,randomised" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())["training"]
    assert record["data"] == ["families:blobs,randomised"]
