"""Host <-> device copies that do not stall the device.

A blocking copy between host and a CUDA device waits for every kernel queued before it; a
tracker that makes one per object per frame keeps the GPU idle between its kernels. The
tracker therefore moves data only through these helpers: uploads go from pinned host memory
with ``non_blocking=True`` (queued like a kernel), offloads go into pinned host memory the
same way (read back later only by uploads queued on the same stream), and results come back
in one copy followed by one wait (:func:`to_host`). On the CPU every helper is a no-op or a
plain copy.
"""

from __future__ import annotations

import torch


def values_free_to_read(device: torch.device) -> bool:
    """Whether looking at a tensor's values on ``device`` from Python (a branch on them, a
    ``tolist``) costs no wait: on the CPU only. Shortcuts that depend on values (skipping
    constant masks) are taken only there; elsewhere the tracker stays on the no-wait path."""
    return device.type == "cpu"


def pinned(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (a host tensor) in page-locked memory when it is going to a CUDA device, so that
    a non-blocking upload really does not block."""
    if device.type == "cuda" and x.device.type == "cpu" and not x.is_pinned():
        return x.pin_memory()
    return x


def to_device(
    x: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``x`` on ``device`` (and in ``dtype``), queued without waiting; ``x`` itself when it is
    already there. The cast runs on the accelerator's side (before an offload, after an upload)."""
    cast = dtype is not None and x.dtype != dtype
    if cast and device.type == "cpu":
        x, cast = x.to(dtype), False
    if x.device != device:
        x = pinned(x, device).to(device, non_blocking=True)
    return x.to(dtype) if cast else x


def host_values(
    values: list[float] | list[list[float]],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Small Python numbers as a tensor on ``device``, in one non-blocking upload."""
    return to_device(pinned(torch.tensor(values, dtype=dtype), device), device)


def to_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the host, in one copy and one wait for the device (pinned memory, so the copy
    runs at full speed). The only place the tracker waits for the device."""
    if x.device.type == "cpu":
        return x
    host = x.to("cpu", non_blocking=True)
    if x.device.type == "cuda":
        torch.cuda.current_stream(x.device).synchronize()
    return host
