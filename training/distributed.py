"""Multi-process training through `accelerate launch` (DDP semantics), one process = one rank.

The trainer never wraps its models: generation, log-probs and the scoring head
all call the plain Hugging Face model, and after each backward pass the
gradients are averaged across ranks here. Every rank starts from the same
weights (broadcast from rank 0) and applies the same averaged gradients, so
the weights stay identical without a DDP wrapper in the way of `generate`.

    accelerate launch --num_processes 2 train.py --problems_per_batch=8

Single-process runs use the same object with world_size 1, where every
method is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Distributed:
    def __init__(self, cpu: bool = False):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world_size > 1 and not dist.is_initialized():
            # accelerate's state object reads the launcher's environment and
            # starts the process group (gloo on CPU, nccl on CUDA).
            from accelerate import PartialState

            PartialState(cpu=cpu)  # cpu: gloo even where CUDA exists
        self.enabled = self.world_size > 1 and dist.is_initialized()
        if self.enabled:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        # nccl reduces only CUDA tensors; gloo only CPU ones
        nccl = self.enabled and dist.get_backend() == "nccl"
        self.comm_device = torch.device(f"cuda:{self.local_rank}") if nccl else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """One GPU per rank: `cuda` becomes `cuda:<local rank>`."""
        if self.enabled and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (round-robin, so shares differ by at most one)."""
        return items[self.rank :: self.world_size] if self.enabled else items

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Make every rank hold rank 0's weights."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, params: list) -> None:
        """All-reduce and average gradients; a parameter without a gradient on one rank counts as zero there."""
        if not self.enabled:
            return
        # a parameter no rank used keeps no gradient, so AdamW skips it as in one process
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.comm_device)
        dist.all_reduce(used, op=dist.ReduceOp.SUM)
        for p, n in zip(params, used.tolist()):
            if n == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(self.world_size)

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
