"""Which parts of the model may run in reduced precision under ``torch.autocast``.

Autocast (``TrackerOptions.autocast_dtype``) casts matrix products and convolutions to
bfloat16 wherever it is on. Each part below is a float32 island unless its switches are off:
inside it autocast is off and floating inputs are cast to float32. Memory attention has three
parts (its layers' self-attention, cross-attention to the memory, feed-forward), each with a
switch on every layer.

The default policy lets only memory attention's feed-forward run in bfloat16
(``MemoryAttentionLayer.keep_feed_forward_float32``): on the recorded ``mini_a`` cases it is
the one part that keeps mean mask IoU >= 0.99 with no presence flip against float32 on both the
video case and the 40-frame long case. Any attention in bfloat16 (either attention, its
projections or its softmax alone), and every other part, flips objects on the long case;
figures in docs/PERFORMANCE.md ("bfloat16 policy per model part"). ``set_autocast_parts``
chooses another set.

CPU autocast differs from CUDA's: on CPU a layer norm of a bfloat16 input stays bfloat16, where
CUDA computes it in float32. Our layer norms (``modeling.common.LayerNorm``, ``LayerNorm2d``)
follow CUDA's rule on every device, so that CPU measurements stand for CUDA's rules; the CPU's
bfloat16 kernels still differ from CUDA's, so CUDA figures are measured apart
(``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)

Switch = tuple[str, str]
"""(module path, attribute): a float32-island switch; ``*`` in the path matches one name."""

_MEMORY_ATTENTION = ("memory_attention", "keep_float32")
_LAYERS = "memory_attention.layers.*"

AUTOCAST_PARTS: dict[str, tuple[Switch, ...]] = {
    "image_encoder": (("image_encoder", "keep_float32"),),
    "memory_attention.self_attention": (
        _MEMORY_ATTENTION,
        (_LAYERS, "keep_self_attention_float32"),
    ),
    "memory_attention.cross_attention": (
        _MEMORY_ATTENTION,
        (_LAYERS, "keep_cross_attention_float32"),
    ),
    "memory_attention.feed_forward": (
        _MEMORY_ATTENTION,
        (_LAYERS, "keep_feed_forward_float32"),
    ),
    "memory_encoder": (("memory_encoder", "keep_float32"),),
    "prompt_encoder": (
        ("sam_prompt_encoder", "keep_float32"),
        ("sam_prompt_encoder.pe_layer", "keep_float32"),
    ),
    "mask_decoder": (("sam_mask_decoder", "keep_float32"),),
    # the model itself: pointer projections, mask prompts taken as output
    "object_pointer": (("", "keep_float32"),),
}
"""Part name -> the switches it turns off (reduced precision allowed). A switch shared by several
parts (memory attention's own) is off when any of them is chosen."""

PART_GROUPS: dict[str, tuple[str, ...]] = {
    "memory_attention": tuple(p for p in AUTOCAST_PARTS if p.startswith("memory_attention.")),
}
"""Shorthands accepted by ``set_autocast_parts``: a name for several parts."""


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


def float32_island(method: F | None = None, *, switch: str = "keep_float32"):
    """Decorate a module's method so that, when autocast is on for its inputs' device and the
    module's attribute ``switch`` is True (the default), it runs with autocast off on float32
    inputs. ``@float32_island`` or ``@float32_island(switch="keep_..._float32")``.

    Its outputs are then float32; outside autocast the method runs unchanged.
    """
    if method is None:
        return functools.partial(float32_island, switch=switch)

    @functools.wraps(method)
    def wrapped(self: nn.Module, *args, **kwargs):
        device_type = _device_type(args, kwargs)
        if (
            device_type is None
            or not getattr(self, switch, True)
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
    return wrapped


def _modules(model: nn.Module, path: str) -> list[nn.Module]:
    if "*" not in path:
        return [model.get_submodule(path)]
    pattern = re.compile(re.escape(path).replace(r"\*", r"[^.]+"))
    return [m for name, m in model.named_modules() if pattern.fullmatch(name)]


def autocast_parts(model: nn.Module) -> set[str]:
    """The parts of ``model`` that run in reduced precision under autocast."""
    return {
        name
        for name, switches in AUTOCAST_PARTS.items()
        if not any(getattr(m, attr, True) for path, attr in switches for m in _modules(model, path))
    }


def set_autocast_parts(model: nn.Module, parts: Iterable[str]) -> None:
    """Let exactly ``parts`` (names of AUTOCAST_PARTS or PART_GROUPS) run in reduced precision
    under autocast; every other part stays a float32 island."""
    chosen: set[str] = set()
    unknown = []
    for part in parts:
        if part in PART_GROUPS:
            chosen.update(PART_GROUPS[part])
        elif part in AUTOCAST_PARTS:
            chosen.add(part)
        else:
            unknown.append(part)
    if unknown:
        raise ValueError(
            f"unknown autocast part(s) {sorted(unknown)}; known: "
            f"{sorted(AUTOCAST_PARTS)}, and {sorted(PART_GROUPS)} for several"
        )
    off = {switch for part in chosen for switch in AUTOCAST_PARTS[part]}
    for switches in AUTOCAST_PARTS.values():
        for path, attr in switches:
            for module in _modules(model, path):
                setattr(module, attr, (path, attr) not in off)
