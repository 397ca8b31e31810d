"""Process-group setup for `torchrun --nproc_per_node N` (DDP) and for plain single-process runs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; when WORLD_SIZE > 1 we initialise a process group
with NCCL on CUDA and gloo on CPU. Everything else in training/ goes through `DistContext`, so the
same code path runs with one process (no process group at all) and with N.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from avsnet_ros.pipeline import select_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this node (picks the CUDA device).
        device: torch device of this process.
        backend: "nccl", "gloo", or None when no process group exists.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Initialise from torchrun's environment (or a single process without it).

    Args:
        device: "auto" | "cpu" | "cuda". Under torchrun with CUDA, each process takes
            cuda:LOCAL_RANK.
        timeout_s: collective timeout.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device)
    if dev.type == "cuda":
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(
                    f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s)"
                )
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, dev, backend)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group (no-op in a single-process run)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place on a copy on the communication device); returns it."""
    if not ctx.distributed:
        return tensor
    comm_dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    t = tensor.detach().to(comm_dev).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(tensor.device)


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer of `module` (e.g. BatchNorm running statistics) from rank `src` to all."""
    if not ctx.distributed:
        return
    for buf in module.buffers():
        if ctx.backend == "nccl" or buf.device.type == "cpu":
            dist.broadcast(buf.data, src=src)
        else:
            tmp = buf.data.cpu()
            dist.broadcast(tmp, src=src)
            buf.data.copy_(tmp)
