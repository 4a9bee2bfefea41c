"""Video frame preprocessing: Pillow's resize (the official loader's) and torch's faster one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_core.frames import ArrayFrames
from sam2_core.tracker import TrackerOptions, VideoSession
from sam2_core.transforms import IMAGENET_MEAN, IMAGENET_STD, video_frame_to_input


def _official_input(frame: np.ndarray, size: int) -> torch.Tensor:
    """What Meta's video loader makes of a frame: Pillow resize, /255, mean/std."""
    resized = np.array(Image.fromarray(frame).resize((size, size))) / 255.0
    x = torch.from_numpy(resized).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


@pytest.fixture
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(480, 640, 3), (96, 128, 3)]]


def test_pillow_resize_gives_the_official_loaders_input(frames):
    for frame in frames:
        ours = video_frame_to_input(frame, 256, "pillow")
        assert ours.shape == (3, 256, 256) and ours.dtype == torch.float32
        assert ours.is_contiguous()
        torch.testing.assert_close(ours, _official_input(frame, 256), rtol=0, atol=1e-6)


def test_torch_resize_is_within_one_grey_level_of_pillows(frames):
    step = 1.0 / (255.0 * min(IMAGENET_STD))  # one grey level after normalisation
    for frame in frames:
        fast = video_frame_to_input(frame, 256, "torch")
        exact = video_frame_to_input(frame, 256, "pillow")
        diff = (fast - exact).abs()
        assert float(diff.max()) <= step * 1.001
        assert float((diff > 1e-5).float().mean()) < 0.01  # nearly every value is the same


def test_a_frame_already_at_the_model_size_is_not_resized(frames):
    frame = frames[1][:64, :64].copy()
    torch.testing.assert_close(
        video_frame_to_input(frame, 64, "torch"), video_frame_to_input(frame, 64, "pillow")
    )


def test_the_session_resizes_frames_as_its_options_say(mini, frames):
    video = ArrayFrames([frames[0]] * 2)
    assert TrackerOptions().frame_resize == "pillow"  # parity with the official loader
    for resize in ("pillow", "torch"):
        session = VideoSession(mini, video, TrackerOptions(frame_resize=resize))
        torch.testing.assert_close(
            session._reader.load(0), video_frame_to_input(frames[0], mini.image_size, resize)
        )


def test_an_unknown_resize_is_refused(frames):
    with pytest.raises(ValueError, match="frame_resize must be one of"):
        TrackerOptions(frame_resize="nearest")
    with pytest.raises(ValueError, match="resize must be one of"):
        video_frame_to_input(frames[0], 256, "nearest")
