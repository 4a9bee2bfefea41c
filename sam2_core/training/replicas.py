"""Data-parallel training: this process's place among replicas, and summing across them.

Each replica forwards its share of a step's global batch, then the gradients are summed
over replicas with one ``torch.distributed.all_reduce`` (gloo on CPU, NCCL on GPU) before
every replica takes the same optimiser step, so the weights stay identical everywhere.
The losses are already normalised by the global batch's object count, so the sum is the
gradient one process would get from the whole batch. (The training forward is a sequence of
model calls, not ``module.forward``, so the reduction is done here rather than by
``DistributedDataParallel``'s forward hooks; one flat buffer per step, as DDP's buckets.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Replicas:
    """rank of world_size data-parallel processes (1: a single process, no communication)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Replicas:
        """The initialised ``torch.distributed`` process group's view, else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """The replica that writes checkpoints and logs."""
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over replicas, in place; returns it."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over replicas. A parameter that no replica's forward
        used keeps no gradient (as in one process, where the optimiser then skips it)."""
        if self.world_size == 1 or not params:
            return
        used = [p.grad is not None for p in params]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat(
            [g.reshape(-1).float() for g in grads]
            + [torch.tensor(used, dtype=torch.float32, device=params[0].device)]
        )
        self.sum_(flat)
        flags = flat[-len(params) :]
        offset = 0
        for p, flag in zip(params, flags.tolist()):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone() if flag > 0 else None
            offset += n
