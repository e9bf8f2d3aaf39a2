"""Multi-process data parallel training under ``torchrun``: the ranks, and what they agree on.

``torchrun --nproc_per_node=N -m tffd_viz train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``: each rank
takes a disjoint shard of the epoch's seeded permutation, the model is wrapped in ``DistributedDataParallel``,
and only rank 0 evaluates and writes files. The ranks agree on when to stop (:func:`out_of_time`), optionally
on the channel order (:func:`averaged_saliency`), and at the end check that they hold the same weights
(:func:`agreed_state_sha256`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tffd_viz.errors import TffdVizError
from tffd_viz.losses import channel_saliency
from tffd_viz.training.state import state_sha256

__all__ = [
    "DistContext",
    "agreed_state_sha256",
    "averaged_saliency",
    "checked_rank_hashes",
    "joined",
    "launched_context",
    "out_of_time",
]


@dataclass
class DistContext:
    """This process's place in a run: ``world`` processes, this one ``rank`` (``local_rank`` on its
    machine)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that evaluates, logs and writes files)."""
        return self.rank == 0


def launched_context() -> DistContext:
    """The ranks ``torchrun`` set in the environment (one process without ``WORLD_SIZE`` > 1); no group
    yet."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(
        world=world, rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def joined(ctx: DistContext, device: torch.device) -> DistContext:
    """``ctx`` with its process group initialised (NCCL on CUDA, else Gloo) unless one exists already;
    ``owns_group`` says whether this call made it (and the caller destroys it)."""
    if not ctx.active or dist.is_initialized():
        return ctx
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(world=ctx.world, rank=ctx.rank, local_rank=ctx.local_rank, owns_group=True)


def averaged_saliency(f: Tensor) -> Tensor:
    """Channel saliency (C,) of the local batch ``f`` (N, C, H, W) averaged over all ranks
    (``--sync-saliency``)."""
    s = channel_saliency(f.detach()).float().contiguous()
    dist.all_reduce(s, op=dist.ReduceOp.SUM)
    return (s / dist.get_world_size()).to(f.dtype)


def out_of_time(
    limit: float, t_begin: float, epoch_seconds: float, ctx: DistContext, device: torch.device
) -> bool:
    """Whether another epoch as long as the last would end past ``limit`` seconds (any rank's view, so all
    ranks stop after the same epoch)."""
    late = (time.perf_counter() - t_begin) + epoch_seconds > limit
    if not ctx.active:
        return late
    flag = torch.tensor(float(late), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def checked_rank_hashes(hashes: Sequence[str]) -> str:
    """The one weight hash all ranks share; raise :class:`TffdVizError` listing each rank's when they
    differ."""
    if len(set(hashes)) != 1:
        listed = ", ".join(f"rank {r}: {h[:12]}" for r, h in enumerate(hashes))
        raise TffdVizError(
            f"the {len(hashes)} ranks ended training with different weights ({listed}); "
            "data parallel training keeps them identical, so the checkpoint was not written"
        )
    return hashes[0]


def agreed_state_sha256(model: nn.Module, ctx: DistContext) -> str:
    """:func:`~tffd_viz.training.state.state_sha256` of ``model``, checked equal on every rank (all-gather).

    Raises
    ------
    TffdVizError
        On every rank, when the ranks' weights differ (:func:`checked_rank_hashes`).
    """
    digest = state_sha256(model)
    if not ctx.active:
        return digest
    hashes: list[object] = [None] * ctx.world
    dist.all_gather_object(hashes, digest)
    return checked_rank_hashes([str(h) for h in hashes])
