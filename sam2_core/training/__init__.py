"""Training SAM 2 models on videos with ground-truth masks (clips, losses, loop, checkpoints)."""

from .averaging import average_state_dicts
from .clips import Clip, ClipBatch, ClipSource, SyntheticClips, VideoClips, cut_clip, make_batch
from .forward import ClipForward, PromptOptions, StepOutput
from .losses import LossWeights, step_losses, total_loss
from .trainer import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    StepStats,
    TrainConfig,
    Trainer,
    build_for_training,
    frozen_names,
    load_tree,
    lr_factor,
)

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "Clip",
    "ClipBatch",
    "ClipForward",
    "ClipSource",
    "LossWeights",
    "PromptOptions",
    "StepOutput",
    "StepStats",
    "SyntheticClips",
    "TrainConfig",
    "Trainer",
    "VideoClips",
    "average_state_dicts",
    "build_for_training",
    "cut_clip",
    "frozen_names",
    "load_tree",
    "lr_factor",
    "make_batch",
    "step_losses",
    "total_loss",
]
