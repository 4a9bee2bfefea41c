"""How a worker runs its model: precision, compilation, where tracking state lives, input size
(``jobs label --dtype/--compile/--offload-memory/--image-size/--no-tf32``), and how it shares
its device with other workers and among the units it labels at once.

The decisions are pure functions of plain values (:func:`tracker_options`, :func:`device_plan`),
so they are tested without a GPU; :func:`apply_plan` is the only part that touches CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

DTYPES = ("float32", "bfloat16")

CONTEXT_HEADROOM = 0.05
"""Share of a fractional GPU share left out of the caching allocator's cap: each process's CUDA
context and kernels live outside it (a few hundred MB), and shares add up to the whole device."""


@dataclass(frozen=True)
class ComputeOptions:
    """What a run asks of every worker's model.

    dtype: "float32" or "bfloat16" (autocast with sam2_core's bfloat16 policy, see
    ``sam2_core.modeling.precision``, and tracking memory stored in bfloat16). compile:
    ``torch.compile`` the model's hot parts once per worker. offload_memory: keep per-frame
    tracking state in host memory (``TrackerOptions.storage_device="cpu"``). image_size: run the
    model at this square input side instead of its config's (``sam2_core.build.with_image_size``).
    tf32: let CUDA float32 matrix products use TensorFloat-32 (no effect on CPU).
    """

    dtype: str = "float32"
    compile: bool = False
    offload_memory: bool = False
    image_size: int | None = None
    tf32: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.image_size is not None and (self.image_size < 32 or self.image_size % 32):
            raise ValueError(
                f"image size must be a positive multiple of 32 (e.g. 512, 768, 1024), got {self.image_size}"
            )


def tracker_options(compute: ComputeOptions):
    """The tracker's options for ``compute``; everything it does not set keeps the tracker's own
    defaults."""
    import torch

    from sam2_core.tracker import TrackerOptions

    options = TrackerOptions()
    if compute.dtype == "bfloat16":
        options = replace(options, memory_dtype=torch.bfloat16, autocast_dtype=torch.bfloat16)
    if compute.offload_memory:
        options = replace(options, storage_device="cpu")
    return options


@dataclass(frozen=True)
class DevicePlan:
    """Where a worker's units run.

    devices: one model is built per entry ("cpu", or "cuda:i" for each GPU Ray assigned);
    slots: the device of each unit the worker labels at once (round robin over ``devices``);
    streams: whether each slot gets a CUDA stream of its own; memory_fraction: the cap on this
    process's caching allocator per device (None: the whole device); tf32: TensorFloat-32 on.
    """

    devices: tuple[str, ...]
    slots: tuple[str, ...]
    streams: bool = False
    memory_fraction: float | None = None
    tf32: bool = False


def device_plan(
    gpu_share: float,
    ray_gpu_ids: Sequence[int | str],
    units_at_once: int,
    cuda_available: bool,
    visible_devices: str | None = None,
    tf32: bool = True,
) -> DevicePlan:
    """Plan a worker's devices from its Ray GPU share and assignment.

    gpu_share: ``--gpus-per-worker`` (0: CPU). ray_gpu_ids: ``ray.get_gpu_ids()`` inside the
    actor. visible_devices: ``CUDA_VISIBLE_DEVICES`` as the actor sees it; Ray normally sets it to
    exactly the assigned GPUs, so they are ``cuda:0..k-1`` in its order; when it is unset or lists
    other devices (``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``) the ids index devices directly.
    A share below one GPU caps the allocator at that share less :data:`CONTEXT_HEADROOM`, so
    workers packed on one GPU cannot starve each other; each unit at once gets its own stream.
    """
    units = max(1, int(units_at_once))
    if gpu_share <= 0 or not cuda_available:
        return DevicePlan(devices=("cpu",), slots=("cpu",) * units)
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    ids = [str(i) for i in ray_gpu_ids]
    if not ids:
        indices = [0]
    elif all(i in visible for i in ids):
        indices = [visible.index(i) for i in ids]
    else:
        indices = [int(i) for i in ids]
    devices = tuple(f"cuda:{i}" for i in indices)
    fraction = round(gpu_share * (1 - CONTEXT_HEADROOM), 4) if gpu_share < 1 else None
    return DevicePlan(
        devices=devices,
        slots=tuple(devices[k % len(devices)] for k in range(units)),
        streams=True,
        memory_fraction=fraction,
        tf32=tf32,
    )


def apply_plan(plan: DevicePlan) -> None:
    """Set the plan's process-wide CUDA settings (nothing on CPU).

    TF32 rounds the inputs of float32 matrix products to a 10-bit mantissa: several times
    faster on Ampere and later GPUs, at a small drift of the logits from strict float32 (so
    parity with float32 references loosens; not yet measured here, no GPU was lent);
    ``--no-tf32`` keeps strict float32 for parity runs.
    """
    if not plan.streams:
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = plan.tf32
    torch.backends.cudnn.allow_tf32 = plan.tf32
    if plan.memory_fraction is not None:
        for device in plan.devices:
            torch.cuda.set_per_process_memory_fraction(plan.memory_fraction, torch.device(device))
