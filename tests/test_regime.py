"""Where RL is known to work: problems at the edge of competence, and a warm-up that leaves room."""

import json
from types import SimpleNamespace

import pytest

import training.data.problems
from training.config import TrainingConfig
from training.errors import UserError
from training.runtime.distributed import Distributed
from training.sampling import EDGE_MARGIN, PassRates, ProblemSampler
from training.warmup import WarmupMonitor, in_validation_slice, should_stop

from test_trainer import make_trainer


def _pool(n=40):
    return [SimpleNamespace(id=f"p{i}", family="f") for i in range(n)]


def _rates(pool, edge_ids):
    rates = PassRates()
    # hand-made estimates: the edge problems pass sometimes, the rest never or always
    rates.rates = {p.id: (0.5 if p.id in edge_ids else float(i % 2)) for i, p in enumerate(pool)}
    return rates


def test_pass_rates_blend_each_group_into_a_running_estimate():
    pool, rates = _pool(2), PassRates()
    rates.note(pool, 4, [True, True, False, False] + [False] * 4, Distributed())
    assert rates.rates == {"p0": 0.5, "p1": 0.0}
    assert rates.on_edge("p0") and not rates.on_edge("p1") and not rates.on_edge("unseen")
    rates.note(pool[:1], 4, [True] * 4, Distributed())
    assert rates.rates["p0"] == pytest.approx(0.75)  # half history, half the newest group
    for _ in range(10):
        rates.note(pool[:1], 4, [True] * 4, Distributed())
    assert rates.rates["p0"] > 1 - EDGE_MARGIN and not rates.on_edge("p0")  # solved every time: off the edge


def test_edge_sampling_draws_the_edge_more_often_and_keeps_its_exploration_share():
    pool = _pool(40)
    edge_ids = {f"p{i}" for i in range(0, 40, 5)}  # 8 of 40 on the edge
    sampler = ProblemSampler(pool, "edge", batch_size=8, seed=0, global_step=0, dist=Distributed(),
                             pass_rates=_rates(pool, edge_ids), explore=0.25)
    drawn_edge, drawn_other = 0, 0
    for step in range(50):
        batch = sampler.batch(iteration=step, global_step=step)
        assert len({p.id for p in batch}) == 8  # distinct within a batch
        on_edge = sum(p.id in edge_ids for p in batch)
        assert on_edge >= 6  # all but the explored quarter come from the edge
        assert sampler.edge_share(batch) == on_edge / 8
        drawn_edge += on_edge
        drawn_other += 8 - on_edge
    # per problem, an edge problem is drawn far more often than one off the edge
    assert drawn_edge / len(edge_ids) > 4 * drawn_other / (len(pool) - len(edge_ids))
    assert drawn_other > 0  # exploration draws from off the edge too


def test_edge_sampling_without_estimates_is_uniform_and_fills_from_the_rest():
    pool = _pool(10)
    sampler = ProblemSampler(pool, "edge", batch_size=4, seed=0, global_step=0, dist=Distributed())
    batch = sampler.batch(0, 0)
    assert len({p.id for p in batch}) == 4 and sampler.edge_share(batch) == 0.0
    # one problem on the edge: it is in every batch, the other three explore
    sampler.pass_rates.rates = {"p3": 0.5}
    for step in range(5):
        assert "p3" in {p.id for p in sampler.batch(step, step)}


def test_edge_sampling_estimates_survive_a_resume(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--problem_sampling=edge", "--iterations_per_stage=2", "--stages=[5]")
    trainer.train_stage(5, problems)
    assert trainer.pass_rates.rates and set(trainer.pass_rates.rates) <= {p.id for p in problems}
    assert all(0.0 <= r <= 1.0 for r in trainer.pass_rates.rates.values())
    resumed = make_trainer(tmp_path / "again", sandbox, "--problem_sampling=edge")
    resumed.load_checkpoint(str(tmp_path / "stage_5"))
    assert resumed.pass_rates.rates == trainer.pass_rates.rates
    # and the resumed run draws what the uninterrupted one would
    for t in (trainer, resumed):
        t.sampler = ProblemSampler(problems, "edge", 2, 0, t.global_step, t.dist, pass_rates=t.pass_rates)
    assert [p.id for p in trainer.sampler.batch(0, 7)] == [p.id for p in resumed.sampler.batch(0, 7)]


# ================================================================== the warm-up's stopping rule
@pytest.mark.parametrize("losses, stops_at", [
    ([3.0, 2.0, 1.5, 1.2, 1.0, 0.9], None),                  # still falling: never stops
    ([3.0, 2.0, 1.5, 1.5, 1.49, 1.51, 1.2], 5),             # flat for 3 checks (under 1% below 1.5): stops at the 6th
    ([3.0, 2.0, 2.5, 2.4, 1.98, 1.9], None),                 # 1.98 is within 1% of 2.0, but 1.9 is a real fall
    ([1.0, 1.0, 1.0, 1.0], 3),                               # flat from the start
])
def test_val_loss_rule_stops_where_the_curve_stops_falling(losses, stops_at):
    stopped = [i for i in range(len(losses))
               if should_stop(losses[: i + 1], [1.0] * (i + 1), "val_loss", patience=3, min_delta=0.01, entropy_floor=0.0)]
    assert (stopped[0] if stopped else None) == stops_at


def test_entropy_rule_stops_at_the_floor_and_steps_never_stop_early():
    entropies = [1.2, 0.8, 0.5, 0.35, 0.2]
    first = next(i for i in range(5) if should_stop([1.0] * (i + 1), entropies[: i + 1], "entropy", 3, 0.01, 0.35))
    assert first == 3
    assert not any(should_stop([1.0] * (i + 1), entropies[: i + 1], "steps", 1, 0.01, 9.0) for i in range(5))


def test_validation_slice_is_a_fixed_share_of_ids():
    ids = [f"curriculum/f/warmup/{i:04d}" for i in range(2000)]
    held = [i for i in ids if in_validation_slice(i, 0.1)]
    assert 150 < len(held) < 250
    assert held == [i for i in ids if in_validation_slice(i, 0.1)]  # a pure function of the id


def test_early_stopped_warm_up_logs_its_curve_and_reads_no_evaluation_problem(tmp_path, sandbox, monkeypatch):
    loaded = []
    real = training.data.problems.load_curriculum

    def instrumented(split, *args, **kwargs):
        loaded.append(split)
        return real(split, *args, **kwargs)

    monkeypatch.setattr(training.data.problems, "load_curriculum", instrumented)
    seen = []
    real_init = WarmupMonitor.__init__

    def record(self, generator, problems, *args):
        seen.extend(problems)
        real_init(self, generator, problems, *args)

    monkeypatch.setattr(WarmupMonitor, "__init__", record)
    # a floor no model falls below at once: stops at the first check
    trainer = make_trainer(tmp_path, sandbox, "--warmup.steps=6", "--warmup.stop=entropy", "--warmup.eval_every=2",
                           "--warmup.entropy_floor=100.0", "--warmup.val_share=0.05")
    stats = trainer.warmup()
    assert stats["warmup_generator_steps"] == 2
    assert stats["warmup_code_entropy"] > 0 and stats["warmup_val_loss"] > 0
    assert loaded and set(loaded) == {"warmup"}
    assert seen and {p.split for p in seen} == {"warmup"}
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    curve = [r for r in rows if "warmup_code_entropy" in r and "warmup_step" in r]
    assert [r["warmup_step"] for r in curve] == [2]


def test_warm_up_stop_settings_are_checked():
    for bad in (["--warmup.stop=never"], ["--warmup.stop=val_loss", "--warmup.val_share=0"], ["--warmup.eval_every=0"]):
        with pytest.raises(UserError):
            TrainingConfig().with_overrides(bad)
