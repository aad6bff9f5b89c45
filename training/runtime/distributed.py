"""Multi-process training through `accelerate launch`, one process = one rank.

Data parallel (configs/accelerate/multi_gpu.yaml): every rank holds full
copies of the players and the trainer never wraps them, so generation,
log-probs and the scoring head call the plain Hugging Face model. After each
backward pass the gradients are averaged across ranks here. Every rank starts
from the same weights (broadcast from rank 0) and applies the same averaged
gradients, so the weights stay identical without a DDP wrapper in the way of
`generate`.

Fully sharded (configs/accelerate/fsdp.yaml, which sets ACCELERATE_USE_FSDP):
`prepare_model` shards each player with torch's FSDP2 (`fully_shard`, one unit
per decoder layer plus the root), so parameters, gradients and optimizer state
live 1/world_size per rank between uses. Ranks generate different numbers of
tokens and run different numbers of micro-batches, which per-layer
all-gathers cannot follow, so every use of a model goes through `gathered`:
its full weights are gathered once, every forward and backward inside runs
without collectives (gradients accumulate locally), and `sync_gradients`
ends an update with one forward/backward pass that every rank runs, in which
FSDP reduce-scatters the accumulated gradients. The optimizer then steps on
the shards.

    accelerate launch --num_processes 2 train.py --problems_per_batch=8

Single-process runs use the same object with world_size 1, where every
method is a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from training.errors import UserError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


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
        # nccl reduces only CUDA tensors; gloo only CPU ones. Under an FSDP launch accelerate
        # may start "cuda:nccl,cpu:gloo", which reduces CUDA tensors on nccl.
        nccl = self.enabled and "nccl" in str(dist.get_backend())
        self.comm_device = torch.device(f"cuda:{self.local_rank}") if nccl else torch.device("cpu")
        if _env_flag("ACCELERATE_USE_DEEPSPEED"):
            raise UserError(
                "DeepSpeed is not supported by this trainer; launch with configs/accelerate/fsdp.yaml "
                "(FSDP full sharding partitions parameters, gradients and optimizer state like ZeRO-3)"
            )
        # accelerate's launcher exports its FSDP settings; the sharding itself is torch's FSDP2
        self.fsdp = self.enabled and _env_flag("ACCELERATE_USE_FSDP")
        if _env_flag("ACCELERATE_USE_FSDP") and _env_flag("FSDP_OFFLOAD_PARAMS"):
            raise UserError(
                "fsdp_offload_params is not supported; set it to false and use --offload_reference=true "
                "to keep the frozen reference model on CPU"
            )
        self._reshard_after_forward = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower() != "false"
        self._gathered: set = set()  # ids of the models whose full weights are gathered now

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

    def prepare_players(self, generator_model, discriminator_modules: list, seed: int, problems_per_batch: int) -> None:
        """Same weights on every rank, FSDP shards where launched so, then each rank its own samples.

        `discriminator_modules` is the discriminator's LM, then its scoring head,
        which is initialised from each rank's RNG and so is broadcast too. Every
        rank needs at least one problem of each batch.
        """
        if problems_per_batch < self.world_size:
            raise UserError(
                f"problems_per_batch={problems_per_batch} is smaller than the {self.world_size} processes; "
                "give every process at least one problem"
            )
        self.broadcast_parameters(generator_model)
        for module in discriminator_modules:
            self.broadcast_parameters(module)
        self.prepare_model(generator_model)
        self.prepare_model(discriminator_modules[0])
        torch.manual_seed(seed + 1000 * self.rank)

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Make every rank hold rank 0's weights."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    # ------------------------------------------------------------------ FSDP

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Shard `model` in place with FSDP2 when launched with an FSDP config (no-op otherwise).

        Call it after `broadcast_parameters` and before building the optimizer,
        which must hold the sharded parameters.
        """
        if not self.fsdp:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.comm_device.type, (self.world_size,))
        # the transformers model under a peft wrapper: `generate` calls its forward, not the wrapper's
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        names = _layer_classes(model)
        layers = [m for m in model.modules() if type(m).__name__ in names]
        if not layers:
            raise UserError(
                f"FSDP found no layers of class {sorted(names)} in {type(model).__name__}; "
                "set fsdp_transformer_layer_cls_to_wrap in the accelerate config to the model's decoder layer class"
            )
        for layer in layers:
            fully_shard(layer, mesh=mesh, reshard_after_forward=self._reshard_after_forward)
        fully_shard(model, mesh=mesh, reshard_after_forward=self._reshard_after_forward)
        model.register_load_state_dict_pre_hook(_shard_incoming_state)
        # FSDP sets itself up in the root's first forward; run it now, on every rank, so that a
        # first call that enters below the root (the scoring head's backbone) finds it ready
        device = next(model.parameters()).to_local().device
        with torch.no_grad():
            model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), use_cache=False)

    @staticmethod
    def _root(model):
        """The outermost FSDP unit in `model` (the model itself, or the one under its peft wrapper), or None."""
        from torch.distributed.fsdp import FSDPModule

        return next((m for m in model.modules() if isinstance(m, FSDPModule)), None)

    def is_sharded(self, model) -> bool:
        return self.fsdp and self._root(model) is not None

    @contextmanager
    def gathered(self, model):
        """Full weights of a sharded `model` on every rank for the block; no collectives inside.

        Forward and backward passes inside run without communication, so ranks
        may generate different lengths and run different numbers of
        micro-batches; gradients accumulate locally until `sync_gradients`.
        Re-entrant, and a no-op for models that are not sharded.
        """
        model = self._root(model) if self.fsdp else None
        if model is None or id(model) in self._gathered:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        self._gathered.add(id(model))
        for unit in units:
            unit.unshard()
        model.set_reshard_after_forward(False)
        model.set_reshard_after_backward(False)
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
            model.set_reshard_after_backward(True)
            model.set_reshard_after_forward(self._reshard_after_forward)
            for unit in units:
                unit.reshard()
            self._gathered.discard(id(model))

    def sync_gradients(self, model, params: list) -> None:
        """End an update: average `params`' gradients over ranks (every rank must call it).

        For a sharded model inside `gathered`, one forward/backward pass of a
        single token (loss 0) on every rank makes FSDP reduce-scatter the
        gradients accumulated so far; unsharded parameters (the scoring head)
        are all-reduced as in data parallel.
        """
        model = self._root(model) if self.fsdp else None
        if model is not None and id(model) in self._gathered:  # outside, FSDP's own backward synced them
            model.set_requires_gradient_sync(True)
            device = next(model.parameters()).device  # inside `gathered`: the unsharded, local tensors
            token = torch.zeros((1, 1), dtype=torch.long, device=device)
            (model(input_ids=token, use_cache=False).logits.sum() * 0.0).backward()
            model.set_requires_gradient_sync(False)
        self.average_gradients(params)

    def clip_grad_norm(self, params: list, max_norm: float) -> torch.Tensor:
        """`clip_grad_norm_` over params that may mix sharded (DTensor) and plain gradients."""
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        if not any(isinstance(g, DTensor) for g in grads):
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        squares = []
        for group in ([g for g in grads if isinstance(g, DTensor)], [g for g in grads if not isinstance(g, DTensor)]):
            if group:
                norm = torch.nn.utils.get_total_norm(group)
                norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
                squares.append(norm.float().cpu() ** 2)
        total = torch.stack(squares).sum().sqrt()
        coef = min(1.0, max_norm / (float(total) + 1e-6))
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
        return total

    def full(self, obj, everywhere: bool = False):
        """`obj` (a state dict, possibly nested) with every sharded tensor gathered whole.

        A collective when anything is sharded: every rank calls it, in the same order.
        By default the whole tensors go to rank 0's CPU (the one that writes) and the other
        ranks get None in their place; `everywhere` leaves them on every rank's device
        (for a local copy of the model).
        """
        from torch.distributed.tensor import DTensor

        if isinstance(obj, DTensor):
            whole = obj.full_tensor()
            if everywhere:
                return whole
            return whole.cpu() if self.is_main else None
        if isinstance(obj, dict):
            return {k: self.full(v, everywhere) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.full(v, everywhere) for v in obj]
        return obj

    @staticmethod
    def shard_optimizer_state(optimizer) -> None:
        """After `optimizer.load_state_dict` of a whole-tensor state: shard each state tensor like its parameter."""
        from torch.distributed.tensor import DTensor

        for param, state in optimizer.state.items():
            if not isinstance(param, DTensor):
                continue
            for key, value in state.items():
                if torch.is_tensor(value) and not isinstance(value, DTensor) and tuple(value.shape) == tuple(param.shape):
                    state[key] = _shard_like(value, param)

    # ------------------------------------------------------------------ data parallel

    def average_gradients(self, params: list) -> None:
        """All-reduce and average gradients; a parameter without a gradient on one rank counts as zero there.

        Sharded (FSDP) parameters are skipped: FSDP already reduced theirs.
        """
        if not self.enabled:
            return
        from torch.distributed.tensor import DTensor

        params = [p for p in params if not isinstance(p, DTensor)]
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

    def close(self) -> None:
        """Destroy the process group while the interpreter is still whole.

        A gloo group left to interpreter shutdown can abort the process
        ("terminate called without an active exception", SIGABRT) after a run
        that otherwise finished, which the launcher reports as a failed rank.
        """
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
        self.enabled = False


def _layer_classes(model) -> set:
    """Class names of the decoder layers to shard one by one: the accelerate config's, else the model's own."""
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").strip()
    if named:
        return {n.strip() for n in named.split(",") if n.strip()}
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def _shard_incoming_state(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of a sharded model: whole tensors (from a checkpoint) become shards."""
    from torch.distributed.tensor import DTensor

    current = module.state_dict()
    for key, value in list(state_dict.items()):
        if not key.startswith(prefix):
            continue
        target = current.get(key[len(prefix):])
        if isinstance(target, DTensor) and torch.is_tensor(value) and not isinstance(value, DTensor):
            state_dict[key] = _shard_like(value, target)


def _shard_like(whole: torch.Tensor, like) -> object:
    """`whole` split over the ranks as the DTensor `like` is (its mesh, placements, device and dtype)."""
    from torch.distributed.tensor import distribute_tensor

    local = like.to_local()
    return distribute_tensor(whole.to(local.device, local.dtype), like.device_mesh, like.placements)
