"""Training data from what users have (label runs, DAVIS / YouTube-VOS folders, SA-V), as
clip sources for :mod:`sam2_core.training`, and held-out J&F of checkpoints."""

from pipeline.training.data import DataSpec, TrainingData, load_training_data, parse_data_spec
from pipeline.training.heldout import heldout_jf, keep_best, tracked_table
from pipeline.training.videos import TableClips, TrainingVideo, davis_videos, run_videos, sav_videos

__all__ = [
    "DataSpec",
    "TableClips",
    "TrainingData",
    "TrainingVideo",
    "davis_videos",
    "heldout_jf",
    "keep_best",
    "load_training_data",
    "parse_data_spec",
    "run_videos",
    "sav_videos",
    "tracked_table",
]
