"""Loading official checkpoints strictly: SAM 2's ``torch.save({"model": state_dict})`` and
SAM 1's bare ``torch.save(state_dict)``.

A checkpoint is refused, with a message listing the offending tensors, when
any tensor is missing, unexpected or of the wrong shape; files that are not
SAM 2 checkpoints or are truncated are refused too. Loading never unpickles
arbitrary objects (``weights_only=True``). Bytes come from :mod:`sam2_core.hub`
and are parsed as they are, never read a second time.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from .hub import CheckpointBytes, read_checkpoint


class CheckpointError(ValueError):
    """A file that cannot be loaded as the requested SAM 2 checkpoint."""


def read_state_dict(data: bytes, source: str = "<bytes>") -> dict[str, torch.Tensor]:
    """Parse checkpoint bytes into a state dict: ``{"model": {name: tensor}}`` (SAM 2) or a bare
    ``{name: tensor}`` (SAM 1); anything else is refused. Which tensors a model needs is checked
    by :func:`load_state_dict_strict`, so a checkpoint of the other family is refused there,
    with the list of mismatched tensors."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on foreign bytes (even IndexError)
        # torch's own message is left out: for foreign bytes it advises weights_only=False,
        # which would run whatever code the file holds.
        if not (zipfile.is_zipfile(io.BytesIO(data)) or data[:2] == b"PK"):
            raise CheckpointError(
                f"{source} is not a PyTorch checkpoint (of tensors and plain values)"
            ) from None
        if isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(
                f"{source}: refused, it holds Python objects other than tensors and plain values "
                "(only weights are loaded from checkpoints)"
            ) from None
        raise CheckpointError(
            f"{source}: cannot read checkpoint (truncated or corrupt PyTorch file)"
        ) from None
    if (
        isinstance(obj, Mapping)
        and "model" not in obj
        and obj
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        return dict(obj)  # a bare state dict (SAM 1's layout)
    if not isinstance(obj, Mapping) or "model" not in obj:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{source}: not a SAM checkpoint (expected a dict with a 'model' state dict, or a bare state dict of tensors, got {keys})"
        )
    state = obj["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"{source}: 'model' is not a state dict of tensors")
    return dict(state)


def listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> None:
    """Copy ``state`` into ``model``, refusing missing, unexpected or mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} of the wrong shape: {listing(wrong)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({getattr(getattr(model, 'cfg', None), 'name', '?')}): "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    model: nn.Module, checkpoint: str | CheckpointBytes, storage_options: dict | None = None
) -> None:
    """Load an official-format checkpoint into ``model``, strictly.

    ``checkpoint``: an official name, a local path or fsspec URL (read through
    :func:`sam2_core.hub.read_checkpoint`), or bytes already read and checked by it.
    """
    if not isinstance(checkpoint, CheckpointBytes):
        checkpoint = read_checkpoint(checkpoint, storage_options=storage_options)
    state = read_state_dict(checkpoint.data, checkpoint.uri)
    load_state_dict_strict(model, state, checkpoint.uri)
