"""The three official SAM 1 checkpoints (their one home is :mod:`sam2_core.official`)."""

from ..official import SAM1_BASE_URL, SAM1_CHECKPOINTS, SAM1Checkpoint

__all__ = ["SAM1_BASE_URL", "SAM1_CHECKPOINTS", "SAM1Checkpoint"]
