"""Synthetic videos: determinism, masks that match the pixels, motion/occlusion, clicks, dataset I/O."""

from __future__ import annotations

import argparse
import json
import math

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.evaluate import evaluate_uris, read_mask_table
from pipeline.masks import MASK_SCHEMA, masks_from_table
from pipeline.synthetic_io import encode_mp4, write_synthetic_dataset
from sam2_core.clicks import corrective_click, distance_transform, first_click, prompt_frame
from sam2_core.synthetic import SyntheticConfig, generate_video

SMALL = SyntheticConfig(height=64, width=96, num_frames=12)


def _distance_to_segment(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Distance of each RGB pixel (N x 3) to the segment between the object's two colours."""
    c1, c2 = colors.astype(np.float64)
    d = c2 - c1
    a = np.clip((pixels - c1) @ d / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.linalg.norm(pixels - (c1 + a[:, None] * d), axis=1)


# ------------------------------------------------------------------------------ generator


def test_same_seed_gives_identical_video_and_other_seeds_differ():
    a = generate_video(7, SMALL)
    b = generate_video(7, SMALL)
    c = generate_video(8, SMALL)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.masks, b.masks)
    assert a.object_ids == b.object_ids
    assert not np.array_equal(a.frames, c.frames)


def test_video_arrays_have_declared_shapes_and_consistent_masks():
    for seed in range(4):
        v = generate_video(seed, SMALL)
        num_objects = len(v.object_ids)
        assert SMALL.min_objects <= num_objects <= SMALL.max_objects
        assert v.frames.shape == (12, 64, 96, 3) and v.frames.dtype == np.uint8
        assert v.masks.shape == (num_objects, 12, 64, 96) and v.masks.dtype == bool
        assert v.amodal_masks.shape == v.masks.shape
        assert v.object_ids == list(range(1, num_objects + 1))
        # Visible parts never overlap and lie inside the full shapes.
        assert v.masks.sum(axis=0).max() <= 1
        assert not (v.masks & ~v.amodal_masks).any()
        # Every object is visible somewhere.
        assert (v.masks.reshape(num_objects, -1).sum(axis=1) >= SMALL.min_visible_pixels).all()


def test_object_colours_fill_exactly_their_masks():
    """Pixels inside an object's visible mask are blends of its two colours; background pixels are not.

    Colours are rounded to uint8 twice (the two end colours, then each pixel),
    so a pixel lies within sqrt(3) * (0.5 + 0.5) of the exact segment.
    """
    tolerance = math.sqrt(3.0)
    for seed in range(6):
        v = generate_video(seed, SMALL)
        anywhere = v.masks.any(axis=0)
        background = v.frames[~anywhere].astype(np.float64)
        for row, obj in enumerate(v.objects):
            inside = v.frames[v.masks[row]].astype(np.float64)
            assert len(inside) > 0
            assert _distance_to_segment(inside, obj.colors).max() <= tolerance, (
                seed,
                obj.object_id,
            )
            # Saturated object colours vs a muted background: almost no background
            # pixel looks like the object (a mask that missed object pixels would fail).
            on_segment = _distance_to_segment(background, obj.colors) <= tolerance
            assert on_segment.mean() < 0.01, (seed, obj.object_id, on_segment.mean())


def test_objects_occlude_each_other_and_leave_the_frame_over_a_long_video():
    config = SyntheticConfig(height=64, width=64, num_frames=48)
    left_frame = occluded = False
    for seed in range(6):
        v = generate_video(seed, config)
        amodal_area = v.amodal_masks.sum(axis=(2, 3))
        # Some object is wholly outside the frame on some frames and inside on others.
        left_frame |= bool(((amodal_area == 0).any(axis=1) & (amodal_area > 0).any(axis=1)).any())
        for row, obj in enumerate(v.objects):
            hidden = v.amodal_masks[row] & ~v.masks[row]
            if hidden.any():
                # Hidden pixels are shown by a nearer object (larger depth), never by background.
                nearer = [r for r, o in enumerate(v.objects) if o.depth > obj.depth]
                assert nearer
                assert np.array_equal(hidden, hidden & v.masks[nearer].any(axis=0))
                occluded = True
    assert left_frame, "no object left or entered the frame in 6 videos of 48 frames"
    assert occluded, "no occlusion in 6 videos of 48 frames"


def test_background_moves_between_frames():
    v = generate_video(3, SyntheticConfig(height=64, width=64, num_frames=10, background_speed=2.0))
    still = ~v.masks.any(axis=0)
    both = still[0] & still[-1]
    assert both.sum() > 100
    assert np.abs(v.frames[0].astype(int) - v.frames[-1].astype(int))[both].mean() > 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 8},
        {"num_frames": 0},
        {"min_objects": 3, "max_objects": 2},
        {"min_radius": 0.3, "max_radius": 0.2},
        {"max_speed": -1.0},
    ],
)
def test_bad_config_is_rejected_with_the_field_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SyntheticConfig(**kwargs)


def test_negative_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        generate_video(-1, SMALL)


# ------------------------------------------------------------------------------ clicks


def _brute_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest False pixel, outside the image counting as False (brute force)."""
    padded = np.pad(mask, 1)
    zeros = np.argwhere(~padded) - 1
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape)
    d2 = (ys[:, None] - zeros[None, :, 0]) ** 2 + (xs[:, None] - zeros[None, :, 1]) ** 2
    out[ys, xs] = np.sqrt(d2.min(axis=1))
    return out


def test_distance_transform_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(3, 30, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        assert np.allclose(distance_transform(mask), _brute_distance(mask), atol=1e-5)


def test_first_click_is_the_centre_of_a_disk_and_inside_generated_masks():
    yy, xx = np.mgrid[:41, :51]
    disk = (yy - 20) ** 2 + (xx - 30) ** 2 <= 12**2
    assert first_click(disk) == (30, 20)
    for seed in range(4):
        v = generate_video(seed, SMALL)
        for row in range(len(v.object_ids)):
            t = prompt_frame(v.masks[row])
            x, y = first_click(v.masks[row, t])
            assert v.masks[row, t, y, x]
            # No pixel of the mask is farther from its boundary than the click.
            assert (
                distance_transform(v.masks[row, t])[y, x]
                == distance_transform(v.masks[row, t]).max()
            )
    with pytest.raises(ValueError, match="non-empty"):
        first_click(np.zeros((5, 5), bool))


def test_corrective_click_targets_the_larger_error_with_the_right_label():
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    x, y, label = corrective_click(np.zeros_like(gt), gt)
    assert label == 1 and gt[y, x]
    # Prediction = truth plus a thick false-positive block: click it, label 0.
    pred = gt.copy()
    pred[:, 36:] = True
    pred[6:8, 6:8] = False  # a small miss, thinner than the false positive
    x, y, label = corrective_click(pred, gt)
    assert label == 0 and pred[y, x] and not gt[y, x]
    assert corrective_click(gt, gt) is None
    rng = np.random.default_rng(1)
    for _ in range(10):
        x, y, label = corrective_click(np.zeros_like(gt), gt, rng=rng)
        assert label == 1 and distance_transform(gt)[y, x] >= 0.5 * distance_transform(gt).max()


def test_prompt_frame_skips_slivers_of_an_entering_object():
    track = np.zeros((5, 10, 10), bool)
    track[1, 0, 0] = True  # a one-pixel sliver
    track[2, :5, :5] = True
    track[3] = True
    assert prompt_frame(track, 0.0) == 1
    assert prompt_frame(track, 0.2) == 2
    assert prompt_frame(track, 1.0) == 3
    with pytest.raises(ValueError, match="never visible"):
        prompt_frame(np.zeros((3, 4, 4), bool))


# ------------------------------------------------------------------------------ dataset I/O


def _decode(path_or_file) -> np.ndarray:
    with av.open(path_or_file) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_dataset_round_trip_local(tmp_path):
    config = SyntheticConfig(height=64, width=80, num_frames=10)
    dataset = write_synthetic_dataset(str(tmp_path / "ds"), [3, 4], config)
    assert dataset.video_ids == ("synthetic-000003", "synthetic-000004")

    for seed, video_uri, video_id in zip([3, 4], dataset.videos, dataset.video_ids):
        generated = generate_video(seed, config)
        decoded = _decode(video_uri)
        assert decoded.shape == generated.frames.shape
        assert np.abs(decoded.astype(int) - generated.frames.astype(int)).mean() < 4.0
        # The pipeline's own reader sees the same frames the ground truth refers to.
        from pipeline.video import open_video

        with open_video(video_uri) as reader:
            assert (len(reader), reader.height, reader.width) == (10, 64, 80)
            assert np.array_equal(reader[9], decoded[9])

        table = pq.read_table(tmp_path / "ds" / "ground_truth" / f"{video_id}.parquet")
        assert table.schema.equals(MASK_SCHEMA)
        masks = masks_from_table(table)
        assert len(masks) == len(generated.object_ids) * config.num_frames
        for row, object_id in enumerate(generated.object_ids):
            for t in range(config.num_frames):
                assert np.array_equal(masks[(video_id, object_id, t)], generated.masks[row, t])
        assert table.column("present").to_pylist() == [
            bool(generated.masks[r, t].any())
            for r in range(len(generated.object_ids))
            for t in range(config.num_frames)
        ]
        assert set(table.column("run_id").to_pylist()) == {"ground-truth"}
        assert not any(table.column("prompted").to_pylist())

    from pipeline.manifest import read_manifest

    jobs, rejects = read_manifest(dataset.manifest)
    assert rejects == []
    assert [j.video_id for j in jobs] == list(dataset.video_ids)
    gt = masks_from_table(read_mask_table(dataset.ground_truth))
    for job in jobs:
        for spec in job.objects:
            (prompt,) = spec.prompts
            (x, y) = prompt.points[0]
            assert prompt.labels == (1,)
            assert gt[(job.video_id, spec.object_id, prompt.frame)][int(y), int(x)]

    # Ground truth scored against itself is perfect.
    assert evaluate_uris(dataset.ground_truth, dataset.ground_truth).jf == 1.0


def test_make_synthetic_command_writes_a_dataset(tmp_path, capsys):
    from jobs import make_synthetic

    parser = argparse.ArgumentParser()
    make_synthetic.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--output",
            str(out),
            "--num-videos",
            "2",
            "--first-seed",
            "5",
            "--height",
            "48",
            "--width",
            "64",
            "--frames",
            "6",
        ]
    )
    assert make_synthetic.run(args) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["video_id"] for line in lines] == [
        "synthetic-000005",
        "synthetic-000006",
    ]
    assert len(_decode(str(out / "videos" / "synthetic-000005.mp4"))) == 6
    assert "manifest" in capsys.readouterr().out
    bad = parser.parse_args(["--output", str(out), "--height", "47"])
    assert make_synthetic.run(bad) == 1  # odd size: H.264 yuv420p refuses it


def test_encode_mp4_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        encode_mp4(np.zeros((2, 15, 16, 3), np.uint8))


@pytest.fixture(scope="module")
def s3():
    from s3_server import start_s3

    with start_s3(buckets=["synth-data"]) as server:
        yield server


def test_dataset_round_trip_on_s3(s3):
    options = s3.storage_options
    config = SyntheticConfig(height=48, width=64, num_frames=6)
    dataset = write_synthetic_dataset("s3://synth-data/sets/a", [11], config, options)
    assert dataset.manifest == "s3://synth-data/sets/a/manifest.jsonl"
    assert dataset.videos == ("s3://synth-data/sets/a/videos/synthetic-000011.mp4",)

    fs = s3.filesystem()
    with fs.open("synth-data/sets/a/videos/synthetic-000011.mp4", "rb") as handle:
        assert _decode(handle).shape == (6, 48, 64, 3)
    from pipeline.manifest import read_manifest

    jobs, rejects = read_manifest(dataset.manifest, options)
    assert rejects == [] and jobs[0].video == dataset.videos[0]
    table = read_mask_table(dataset.ground_truth, options)
    generated = generate_video(11, config)
    assert table.num_rows == len(generated.object_ids) * 6
    masks = masks_from_table(table)
    assert np.array_equal(masks[("synthetic-000011", 1, 5)], generated.masks[0, 5])
