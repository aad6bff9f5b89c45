"""Dynamic sampling: extra rollouts until each player's batch holds problems_per_batch groups with spread.

The rollout and the rewards are stubbed with known spreads, so each test knows
how many rollouts the rule must take; one test trains a real stage with it.
"""

import json
from types import SimpleNamespace

import pytest
import torch

import training.updates
from models.base import Rollout
from test_trainer import make_trainer
from training.runtime.distributed import Distributed
from training.rollout import StageBatch, TestBatch
from training.sampling import ProblemSampler, cap_groups

G = 2



def _rollout(n_rows: int, width: int) -> Rollout:
    return Rollout(
        prompt_ids=torch.ones(n_rows, width, dtype=torch.long), prompt_mask=torch.ones(n_rows, width, dtype=torch.long),
        completion_ids=torch.ones(n_rows, width + 1, dtype=torch.long),
        completion_mask=torch.ones(n_rows, width + 1, dtype=torch.long),
        texts=["x"] * n_rows, prompts=["p"] * n_rows, num_samples=G,
    )


class _Stub:
    """Stands in for rollout + score: the k-th rollout's groups have spread where `spreads[k]` says."""

    def __init__(self, spreads: list, writer_spreads: list | None = None, stage_id: int = 1):
        self.spreads, self.writer_spreads, self.stage_id = spreads, writer_spreads, stage_id
        self.calls = []

    def rollout(self, stage_id, problems):
        k = len(self.calls)
        self.calls.append([p.id for p in problems])
        spread = self.spreads[min(k, len(self.spreads) - 1)]
        tests = None
        if self.writer_spreads is not None:
            writer = self.writer_spreads[min(k, len(self.writer_spreads) - 1)]
            tests = TestBatch(rollout=_rollout(len(problems) * G, 1 + k), samples_per_problem=G,
                              tests=[[] for _ in problems], sample_tests=[[] for _ in range(len(problems) * G)],
                              passes_reference=[[] for _ in problems])
            tests.writer_rewards = [r for s in writer for r in ((0.0, 1.0) if s else (0.0, 0.0))]
        return StageBatch(
            stage_id=self.stage_id, problems=problems, group_size=G, prefixes=[[] for _ in problems],
            rollout=_rollout(len(problems) * G, 2 + k), completions=["c"] * (len(problems) * G),
            rewards=[r for s in spread for r in ((0.0, 1.0) if s else (0.5, 0.5))],
            reference_results=[[True]] * (len(problems) * G), test_batch=tests,
        )


def _trainer(tmp_path, sandbox, monkeypatch, stub, *overrides):
    trainer = make_trainer(tmp_path, sandbox, "--problems_per_batch=4", f"--group_size={G}", *overrides)
    pool = [SimpleNamespace(id=f"p{i}", family=f"f{i % 3}", prompt="", tests=[], entry_point="f") for i in range(20)]
    trainer.sampler = ProblemSampler(pool, trainer.config.problem_sampling, 4, seed=0, global_step=0, dist=trainer.dist)
    trainer.rollout = stub.rollout
    trainer.score = lambda batch: batch.rewards
    monkeypatch.setattr(training.updates, "writer_rewards", lambda batch, config: batch.test_batch.writer_rewards)
    return trainer, trainer.sampler.batch(0, 0)


def test_half_the_groups_without_spread_take_a_second_rollout_that_fills_the_batch(tmp_path, sandbox, monkeypatch):
    stub = _Stub([[True, False, True, False]])
    trainer, drawn = _trainer(tmp_path, sandbox, monkeypatch, stub, "--dynamic_sampling=true")
    batch, rollouts = trainer.rollout_until_full(1, drawn)
    assert rollouts == 2 and len(stub.calls) == 2
    assert len(set(stub.calls[0] + stub.calls[1])) == 8  # the extra draw took problems the step had not seen
    assert [p.id for p in batch.problems] == stub.calls[0] + stub.calls[1]
    assert len(batch.rewards) == len(batch.rollout) == 16 and batch.rollout.prompt_ids.shape == (16, 3)
    _, valid, frac_zero = trainer.compute_advantages(batch.rewards, G)
    assert frac_zero == 0.5
    kept = cap_groups(valid, G, 4, trainer.dist).view(-1, G)[:, 0]
    assert kept.tolist() == [True, False, True, False] * 2 and int(kept.sum()) == 4


def test_groups_beyond_the_batch_size_are_left_out():
    valid = torch.tensor([True, False, True, True]).repeat_interleave(G)
    kept = cap_groups(valid, G, 2, Distributed()).view(-1, G)[:, 0]
    assert kept.tolist() == [True, False, True, False]


def test_the_batch_size_is_counted_over_ranks_in_rank_order():
    rank1 = SimpleNamespace(rank=1, gather=lambda n: [2, n])  # rank 0 found 2 groups with spread
    valid = torch.tensor([True, True, False, True]).repeat_interleave(G)
    assert cap_groups(valid, G, 3, rank1).view(-1, G)[:, 0].tolist() == [True, False, False, False]
    assert cap_groups(valid, G, 2, rank1).sum() == 0


def test_no_spread_anywhere_stops_at_max_rollout_batches(tmp_path, sandbox, monkeypatch):
    stub = _Stub([[False] * 4])
    trainer, drawn = _trainer(tmp_path, sandbox, monkeypatch, stub, "--dynamic_sampling=true", "--max_rollout_batches=3")
    batch, rollouts = trainer.rollout_until_full(1, drawn)
    assert rollouts == 3 and len(batch.problems) == 12
    assert len({p for call in stub.calls for p in call}) == 12


def test_without_dynamic_sampling_one_rollout_is_the_batch(tmp_path, sandbox, monkeypatch):
    stub = _Stub([[False] * 4])
    trainer, drawn = _trainer(tmp_path, sandbox, monkeypatch, stub)
    batch, rollouts = trainer.rollout_until_full(1, drawn)
    assert rollouts == 1 and [p.id for p in batch.problems] == [p.id for p in drawn]


def test_the_test_writers_batch_is_filled_too(tmp_path, sandbox, monkeypatch):
    # the generator's groups all have spread at once; the test writer's only one in four
    stub = _Stub([[True] * 4], writer_spreads=[[True, False, False, False]], stage_id=5)
    trainer, drawn = _trainer(tmp_path, sandbox, monkeypatch, stub, "--dynamic_sampling=true", "--max_rollout_batches=5")
    batch, rollouts = trainer.rollout_until_full(5, drawn)
    assert rollouts == 4
    assert len(batch.test_batch.tests) == 16 and len(batch.test_batch.rollout) == 32


def test_joined_rollouts_give_each_row_the_log_probs_it_had_alone(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox)
    gen = trainer.generator
    parts = [gen.sample([problems[0].prompt], num_samples=2, max_new_tokens=4, temperature=1.0),
             gen.sample([problems[1].prompt + " and more words here"], num_samples=2, max_new_tokens=9, temperature=1.0)]
    joined = Rollout.cat(parts)
    assert joined.prompt_ids.size(1) == max(p.prompt_ids.size(1) for p in parts)
    assert joined.texts == parts[0].texts + parts[1].texts

    def logps(r):
        return gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask).detach()

    together = logps(joined)
    for i, part in enumerate(parts):
        alone = logps(part)
        rows = together[2 * i: 2 * i + 2, : alone.size(1)]
        assert torch.allclose(rows, alone, atol=1e-5)
        assert (together[2 * i: 2 * i + 2, alone.size(1):] == 0).all()


def test_a_stage_trains_with_dynamic_sampling_and_logs_its_rollouts(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--dynamic_sampling=true", "--max_rollout_batches=2",
                           "--iterations_per_stage=2")
    sample = trainer.rollout

    def one_group_with_spread(stage_id, batch_problems):  # the barely warmed-up model fails everything
        batch = sample(stage_id, batch_problems)
        batch.completions[0] = batch_problems[0].reference_solution
        return batch

    trainer.rollout = one_group_with_spread
    before = {n: p.detach().clone() for n, p in trainer.generator.model.named_parameters()}
    trainer.train_stage(5, problems)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    for row in rows:
        assert row["rollout_batches"] == 2 and row["trained_groups"] == 2  # one group with spread per rollout
        assert row["frac_reward_zero_std"] <= 0.5 and 0.0 <= row["test_writer_frac_reward_zero_std"] <= 1.0
        assert row["grad_norm"] > 0 and row["entropy"] > 0 and row["completion_length"] > 0
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.generator.model.named_parameters())


def test_max_rollout_batches_must_be_positive():
    from training.config import TrainingConfig
    from training.errors import UserError

    with pytest.raises(UserError, match="max_rollout_batches must be at least 1"):
        TrainingConfig().with_overrides(["--max_rollout_batches=0"])
