"""Weight averaging ("model soup"): one model whose weights are the mean of several checkpoints.

Fine-tuning runs that start from a common ancestor usually end in one basin of the loss, and
the mean of their weights often tracks better than any one of them (Wortsman et al., 2022).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..checkpoint import CheckpointError, listing


def average_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same tensors.

    Floating-point tensors are averaged in float32 and stored in the first state's dtype;
    any other tensor (a counter, an index) must be equal in all of them: a mean of integers
    is no integer. NaN or infinite values, in an input or in the mean (an overflow of the
    stored dtype), are refused naming the checkpoint and tensor. ``names`` label the states
    in error messages.
    """
    if not states:
        raise ValueError("nothing to average: no checkpoints given")
    names = (
        list(names) if names is not None else [f"checkpoint {i + 1}" for i in range(len(states))]
    )
    first, first_name = states[0], names[0]
    for state, name in zip(states[1:], names[1:]):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            raise CheckpointError(
                f"{name} and {first_name} hold different tensors "
                f"(only in {first_name}: {listing(missing) or '-'}; only in {name}: {listing(extra) or '-'})"
            )
        shapes = [
            f"{k} {tuple(state[k].shape)} vs {tuple(first[k].shape)}"
            for k in first
            if state[k].shape != first[k].shape
        ]
        if shapes:
            raise CheckpointError(f"{name} and {first_name} differ in shape: {listing(shapes)}")
        kinds = [
            f"{k} {state[k].dtype} vs {first[k].dtype}"
            for k in first
            if state[k].is_floating_point() != first[k].is_floating_point()
        ]
        if kinds:
            raise CheckpointError(
                f"{name} and {first_name} differ in dtype kind (float or not): {listing(kinds)}"
            )
    for state, name in zip(states, names):
        bad = [
            k
            for k, v in state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]
        if bad:
            raise CheckpointError(
                f"{name} holds NaN or infinite values in {listing(bad)}; refusing to average it"
            )
    averaged: dict[str, torch.Tensor] = {}
    for key, reference in first.items():
        if reference.is_floating_point():
            total = torch.zeros(reference.shape, dtype=torch.float32)
            for state in states:
                total += state[key].detach().to("cpu", torch.float32)
            averaged[key] = (total / len(states)).to(reference.dtype)
            if not bool(torch.isfinite(averaged[key]).all()):
                raise CheckpointError(
                    f"the average of {key} is not finite in {reference.dtype} (overflow); refusing to write it"
                )
        else:
            for state, name in zip(states[1:], names[1:]):
                if not torch.equal(state[key].cpu(), reference.cpu()):
                    raise CheckpointError(
                        f"{key} is not a float tensor ({reference.dtype}) and differs between {first_name} and "
                        f"{name}; a mean of such values means nothing, so they must be equal"
                    )
            averaged[key] = reference.detach().cpu().clone()
    return averaged
