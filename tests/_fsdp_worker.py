"""FSDP mechanics in one rank of a 2-process launch, checked against a replica in each process.

    accelerate launch --config_file configs/accelerate/fsdp.yaml tests/_fsdp_worker.py OUT_DIR

Each rank holds the same tiny model twice: one copy sharded by
Distributed.prepare_model, one plain replica. Rank r runs r + 2 micro-batches
inside `gathered` (the last one through the backbone only, as the scoring head
does) and generates a rank-dependent number of tokens; `sync_gradients` then
ends the update. The replica computes every rank's micro-batches itself, so the
expected averaged gradient is known exactly. Writes OUT_DIR/rank<R>.json with
the largest gradient error, the norm `clip_grad_norm` saw against the whole
gradient's, and
whether a whole state dict round-trips through `full` and the load hook.
"""

from __future__ import annotations

import copy
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from _rank_record import write_rank_record  # noqa: E402


def main() -> int:
    from transformers import AutoModelForCausalLM

    from models.tiny import build_tiny
    from training.runtime.distributed import Distributed

    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    dist = Distributed(cpu=True)
    rank, world = dist.rank, dist.world_size
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(build_tiny())
    replica = copy.deepcopy(model)
    dist.prepare_model(model)
    g = torch.Generator().manual_seed(1)
    data = [[torch.randint(0, 100, (2, 8), generator=g) for _ in range(r + 2)] for r in range(world)]

    def loss(m, ids, last):
        if last:  # below the root, like LLMDiscriminator.score_batch
            return m.model(input_ids=ids).last_hidden_state.float().pow(2).mean()
        return m(input_ids=ids, labels=ids).loss

    for r in range(world):  # what every rank's gradients average to
        for i, ids in enumerate(data[r]):
            (loss(replica, ids, i == len(data[r]) - 1) / world).backward()
    reference = {name: p.grad.clone() for name, p in replica.named_parameters()}

    params = list(model.parameters())
    with dist.gathered(model):
        with torch.no_grad():  # ranks generate different lengths: no collective may hang
            n = 3 + 7 * rank
            model.generate(input_ids=data[rank][0][:, :3], max_new_tokens=n, min_new_tokens=n, do_sample=False)
        for i, ids in enumerate(data[rank]):
            loss(model, ids, i == len(data[rank]) - 1).backward()  # averaged over ranks by the sync
        dist.sync_gradients(model, params)
    errors = [(p.grad.full_tensor() - reference[name]).abs().max().item() for name, p in model.named_parameters()]
    whole_norm = sum(p.grad.full_tensor().double().pow(2).sum().item() for p in params) ** 0.5
    norm = dist.clip_grad_norm(params, 0.01)
    clipped = sum(p.grad.full_tensor().pow(2).sum().item() for p in params) ** 0.5

    whole = dist.full(model.state_dict())  # whole tensors on rank 0 only
    everywhere = dist.full(model.state_dict(), everywhere=True)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in everywhere.items()})  # whole tensors in, shards kept
    zeroed = all(v.abs().max().item() == 0 for v in dist.full(model.state_dict(), everywhere=True).values())
    model.load_state_dict(everywhere)
    restored = dist.full(model.state_dict(), everywhere=True)
    record = {
        "sharded": dist.is_sharded(model),
        "max_grad_error": max(errors),
        "norm": float(norm),
        "clipped_norm": clipped,
        "whole_norm": whole_norm,
        "full_on_rank0_only": (whole["lm_head.weight"] is not None) == (rank == 0),
        "load_round_trip": zeroed and all(torch.equal(restored[k], everywhere[k]) for k in everywhere),
    }
    write_rank_record(out_dir, rank, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
