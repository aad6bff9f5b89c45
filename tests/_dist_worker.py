"""train.py inside one rank of a multi-process launch, recording what tests/test_distributed.py checks.

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml \
        tests/_dist_worker.py OUT_DIR --device=cpu --checkpoint_dir=... [train.py arguments]

Runs train.py's own `main` (same parsing, Distributed, players, trainer), with
two hooks on AdversarialTrainer:
- before the trainer is built, every rank but 0 perturbs its weights, so that
  identical weights at the end prove the broadcast from rank 0 and the averaged
  gradients, not merely equal seeds;
- it writes OUT_DIR/rank<R>.json: world size, and a sha256 per parameter of
  both players right after the trainer is built and after training (whole
  tensors, gathered under FSDP), whether FSDP sharded the players, and the
  share of the generator's optimizer state that the rank holds.

After training, before train.py closes the process group, it also measures one property of
Distributed.average_gradients alone: how far AdamW moves a parameter that no
rank used in a step (the scoring head during the stage-5 test-writer update),
which one process leaves in place.
"""

from __future__ import annotations

import hashlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from _rank_record import write_rank_record  # noqa: E402

import train  # noqa: E402
from training.adversarial_trainer import AdversarialTrainer  # noqa: E402


def _modules(generator, discriminator) -> dict:
    head = getattr(discriminator, "score_head", None)
    return {"generator": generator.model, "discriminator": discriminator.model, "score_head": head}


def digests(generator, discriminator) -> dict:
    """{player/parameter name: sha256 of its float32 bytes}."""
    out = {}
    for role, module in _modules(generator, discriminator).items():
        if module is None:
            continue
        for name, p in module.named_parameters():
            p = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP: every rank gathers the whole
            data = p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
            out[f"{role}/{name}"] = hashlib.sha256(data).hexdigest()
    return out


def optimizer_state_share(optimizer) -> float:
    """The share of the generator's AdamW state tensors that this rank holds (1.0 unsharded)."""
    local = whole = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dim() > 0:
                whole += value.numel()  # a DTensor's numel is the whole tensor's
                local += value.to_local().numel() if hasattr(value, "to_local") else value.numel()
    return local / whole


def unused_parameter_moved() -> float:
    """Step twice after a step that used `b`; how far `b` moved without a gradient."""
    from training.runtime.distributed import Distributed

    dist = Distributed()  # the group train.py started
    torch.manual_seed(0)
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    params = list(a.parameters()) + list(b.parameters())
    optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.0)
    x = torch.ones(1, 2)
    moved = 0.0
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        loss = a(x).sum() + (b(x).sum() if step == 0 else 0.0)  # b only in the first step
        loss.backward()
        dist.average_gradients(params)
        before = b.weight.detach().clone()
        optimizer.step()
        if step > 0:
            moved = max(moved, (b.weight.detach() - before).abs().max().item())
    return moved


def main() -> int:
    out_dir, argv = sys.argv[1], sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    record: dict = {"rank": rank}
    original_init, original_train = AdversarialTrainer.__init__, AdversarialTrainer.train

    def init(self, generator, discriminator, *args, **kwargs):
        if rank != 0:
            noise = torch.Generator().manual_seed(1234 + rank)
            with torch.no_grad():
                for module in _modules(generator, discriminator).values():
                    for p in module.parameters() if module is not None else []:
                        p.add_(0.01 * torch.randn(p.shape, generator=noise).to(p.device, p.dtype))
        original_init(self, generator, discriminator, *args, **kwargs)
        record.update(world_size=self.dist.world_size, enabled=self.dist.enabled)
        record["initial"] = digests(self.generator, self.discriminator)

    def train_and_record(self, *args, **kwargs):
        result = original_train(self, *args, **kwargs)
        record["final"] = digests(self.generator, self.discriminator)
        record["sharded"] = self.dist.is_sharded(self.generator.model) and self.dist.is_sharded(self.discriminator.model)
        record["optimizer_state_share"] = optimizer_state_share(self.generator_optimizer)
        record["unused_parameter_moved"] = unused_parameter_moved()  # before train.py closes the group
        return result

    AdversarialTrainer.__init__, AdversarialTrainer.train = init, train_and_record
    code = train.main(argv)
    record["group_closed"] = not torch.distributed.is_initialized()
    write_rank_record(out_dir, rank, record)
    return code


if __name__ == "__main__":
    sys.exit(main())
