"""Each loss_type's update on 2 processes against the same update of the whole batch in one process.

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml tests/_loss_worker.py OUT_DIR
    accelerate launch --config_file configs/accelerate/fsdp.yaml tests/_loss_worker.py OUT_DIR

Every rank builds the tiny generator from the same seed and samples the same
global rollout of 12 completions, cut to lengths of 3 to 10 tokens (so that the
three reductions differ). Rank r updates on an uneven share of its rows
(5 and 7), with some rows masked out as zero-spread groups, in micro-batches of
2, through `policy_update` with the launch's Distributed (gradients averaged, or
FSDP-sharded). A plain replica in each process makes the same update on all 12
rows in one process. The optimizer is SGD with lr 1 and no clipping, so each
weight moves by exactly minus its gradient. Writes OUT_DIR/rank<R>.json with,
per loss_type, the largest difference between the two updated models and the
size of the update, and whether FSDP sharded the model.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from _rank_record import write_rank_record  # noqa: E402

ROWS = 12
SHARES = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11])  # rank 0's and rank 1's rows of the global batch
MASKED = {2, 3, 9}  # rows of zero-spread groups: left out of the update and of its norm


def one_process(dist):
    """The same Distributed, seen as a single process (the replica's)."""
    single = copy.copy(dist)
    single.enabled, single.world_size, single.rank, single.fsdp = False, 1, 0, False
    return single


def update(generator, rollout, advantages, valid, dist, loss_type: str, budget: int) -> None:
    from training.losses import policy_update, trainable_parameters

    params = trainable_parameters([generator.model])
    optimizer = torch.optim.SGD(params, lr=1.0)
    policy_update(generator, optimizer, params, rollout, advantages, valid, dist, temperature=1.0,
                  micro_batch_size=2, clip_range=0.2, max_grad_norm=1e9, loss_type=loss_type,
                  max_completion_length=budget)


def rows_of(rollout, rows: list):
    idx = torch.tensor(rows)
    return dataclasses.replace(rollout, **{name: getattr(rollout, name)[idx] for name in
                                    ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
                        texts=[rollout.texts[i] for i in rows], prompts=[rollout.prompts[i] for i in rows],
                        finished=None)


def main() -> int:
    from models.generator import LLMGenerator
    from training.runtime.distributed import Distributed

    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    dist = Distributed(cpu=True)
    rank = dist.rank
    record = {"world_size": dist.world_size, "rows": len(SHARES[rank])}
    budget = 10
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        torch.manual_seed(0)
        generator = LLMGenerator("tiny", device="cpu")
        replica = copy.deepcopy(generator)
        before = {k: v.clone() for k, v in replica.model.state_dict().items()}
        if dist.fsdp:
            dist.prepare_model(generator.model)
        torch.manual_seed(1)  # the same samples on every rank
        rollout = replica.sample(["def add(a, b):", "Write a function that reverses a list.", "x"] * 2,
                                 num_samples=2, max_new_tokens=budget, temperature=1.0)
        lengths = torch.tensor([3 + (5 * i) % 8 for i in range(ROWS)])  # 3..10 tokens: the reductions differ
        rollout.completion_mask = (torch.arange(budget) < lengths.unsqueeze(1)).long() * rollout.completion_mask
        advantages = torch.linspace(-1.0, 1.0, ROWS)
        valid = torch.tensor([i not in MASKED for i in range(ROWS)])
        advantages = torch.where(valid, advantages, torch.zeros_like(advantages))

        update(replica, rollout, advantages, valid, one_process(dist), loss_type, budget)
        mine = SHARES[rank]
        update(generator, rows_of(rollout, mine), advantages[mine], valid[mine], dist, loss_type, budget)

        after = dist.full(generator.model.state_dict(), everywhere=True)
        expected = replica.model.state_dict()
        record["sharded"] = dist.is_sharded(generator.model)
        record[loss_type] = {
            "max_error": max((after[k].float() - expected[k].float()).abs().max().item() for k in expected),
            "update_size": max((expected[k].float() - before[k].float()).abs().max().item() for k in expected),
        }
    write_rank_record(out_dir, rank, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
