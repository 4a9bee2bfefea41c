"""Which parts of the model may run in reduced precision under ``torch.autocast``.

Autocast (``TrackerOptions.autocast_dtype``) casts matrix products and convolutions to
bfloat16 wherever it is on. Each part below is a float32 island unless its module's
``keep_float32`` is False: inside it autocast is off and floating inputs are cast to float32.
The default policy lets only memory attention run in bfloat16 (``MemoryAttention.keep_float32``),
where most of a tracked frame's arithmetic is: on the recorded ``mini_a`` video case it alone
keeps mean mask IoU >= 0.99 with no presence flip against float32, while every other part moves
the masks more (the mask decoder most); figures in docs/PERFORMANCE.md ("bfloat16 policy").
``set_autocast_parts`` chooses another set.

CPU autocast differs from CUDA's: on CPU, layer norm of a bfloat16 input stays bfloat16
(CUDA computes it in float32), so CPU figures bound, rather than reproduce, CUDA's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)

AUTOCAST_PARTS: dict[str, tuple[str, ...]] = {
    "image_encoder": ("image_encoder",),
    "memory_attention": ("memory_attention",),
    "memory_encoder": ("memory_encoder",),
    "prompt_encoder": ("sam_prompt_encoder", "sam_prompt_encoder.pe_layer"),
    "mask_decoder": ("sam_mask_decoder",),
    "object_pointer": ("",),  # the model itself: pointer projections, mask prompts taken as output
}
"""Part name -> the SAM2Model submodules whose ``keep_float32`` switch it sets."""


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _device_type(args: tuple, kwargs: dict) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, torch.Tensor):
            return value.device.type
    return None


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device autocast does not know (e.g. "meta"): never on
        return False


def float32_island(method: F) -> F:
    """Decorate a module's method so that, when autocast is on for its inputs' device and the
    module's ``keep_float32`` is True (the default), it runs with autocast off on float32 inputs.

    Its outputs are then float32; outside autocast the method runs unchanged.
    """

    @functools.wraps(method)
    def wrapped(self: nn.Module, *args, **kwargs):
        device_type = _device_type(args, kwargs)
        if (
            device_type is None
            or not getattr(self, "keep_float32", True)
            or not _autocast_enabled(device_type)
        ):
            return method(self, *args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return method(
                self, *_to_float32(args), **{k: _to_float32(v) for k, v in kwargs.items()}
            )

    # A code object of its own per decorated method: torch.compile keeps its compiled variants
    # (and its recompile limit) per code object, which one shared wrapper would make common
    # to every part of the model.
    wrapped.__code__ = wrapped.__code__.replace(
        co_name=method.__name__, co_qualname=f"float32_island.{method.__qualname__}"
    )
    return wrapped  # type: ignore[return-value]


def autocast_parts(model: nn.Module) -> set[str]:
    """The parts of ``model`` that run in reduced precision under autocast."""
    return {
        name
        for name, paths in AUTOCAST_PARTS.items()
        if not getattr(model.get_submodule(paths[0]), "keep_float32", True)
    }


def set_autocast_parts(model: nn.Module, parts: Iterable[str]) -> None:
    """Let exactly ``parts`` (names of AUTOCAST_PARTS) run in reduced precision under autocast;
    every other part stays a float32 island."""
    parts = set(parts)
    unknown = parts - AUTOCAST_PARTS.keys()
    if unknown:
        raise ValueError(
            f"unknown autocast part(s) {sorted(unknown)}; known: {sorted(AUTOCAST_PARTS)}"
        )
    for name, paths in AUTOCAST_PARTS.items():
        for path in paths:
            model.get_submodule(path).keep_float32 = name not in parts
