"""Training SAM 2 models on videos with ground-truth masks (clips, losses, loop, checkpoints)."""

from .averaging import average_state_dicts
from .clips import (
    Clip,
    ClipBatch,
    ClipChoice,
    ClipSource,
    SyntheticClips,
    VideoClips,
    choose_clip,
    cut_clip,
    make_batch,
)
from .forward import ClipForward, PromptOptions, StepOutput
from .loader import BackgroundBatches, BatchPlan, StepBatches, step_batches
from .losses import LossWeights, step_losses, total_loss
from .replicas import Replicas
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
    "BackgroundBatches",
    "BatchPlan",
    "Clip",
    "ClipBatch",
    "ClipChoice",
    "ClipForward",
    "ClipSource",
    "LossWeights",
    "PromptOptions",
    "Replicas",
    "StepBatches",
    "StepOutput",
    "StepStats",
    "SyntheticClips",
    "TrainConfig",
    "Trainer",
    "VideoClips",
    "average_state_dicts",
    "build_for_training",
    "choose_clip",
    "cut_clip",
    "frozen_names",
    "load_tree",
    "lr_factor",
    "make_batch",
    "step_batches",
    "step_losses",
    "total_loss",
]
