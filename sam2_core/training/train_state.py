"""A training run's resumable state: ``train_state.pt`` (optimizer, scheduler, step and
random-generator state, written by :meth:`~sam2_core.training.trainer.Trainer.save`), read back
safely, and the write-then-rename save every file of an output folder goes through.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

STATE_FILE = "train_state.pt"
_STATE_KEYS = ("step", "optimizer", "scheduler", "rng", "torch_rng")


def read_train_state(path: Path) -> dict:
    """The dict in a ``train_state.pt``, loaded with ``weights_only=True``: tensors and plain
    values only, so a crafted file cannot run code; anything else is refused, naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"cannot resume: {path} holds Python objects other than tensors and plain values; "
            "refusing to load it (a train_state.pt written by this trainer holds none)"
        ) from None
    except Exception as err:  # torch.load raises many types on foreign or truncated bytes
        raise ValueError(
            f"cannot resume: {path} is not a readable train_state.pt ({type(err).__name__})"
        ) from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"cannot resume: {path} is not a train_state.pt (missing {', '.join(missing)})"
        )
    return state


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
