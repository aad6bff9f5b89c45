"""AdversarialTrainer on the tiny model with a shrunken config: behaviour, not just 'it ran'."""

import json
import math
import os

import pytest
import torch

from reasoning.stages import build_prompt, build_test_prompt
from training.adversarial_trainer import AdversarialTrainer
from training.warmup import Warmup
from training.runtime.build import build_players, seed_everything
from training.config import TrainingConfig
from training.errors import UserError
from training.data.curriculum import load_curriculum

SHRUNK = [
    "--device=cpu",
    "--warmup.steps=2",
    "--warmup.test_writer_steps=1",
    "--warmup.scoring_head_steps=1",
    "--warmup.batch_size=4",
    "--iterations_per_stage=1",
    "--cpu_threads=1",
    "--problems_per_batch=2",
    "--group_size=3",
    "--max_new_tokens=[6, 6, 6, 6, 24]",
    "--test_samples=2",
    "--eval_size=2",
    "--progress=false",
    "--plot=false",
    "--sandbox.workers=1",
    "--sandbox.timeout_s=1.0",
]



def make_trainer(tmp_path, sandbox, *overrides):
    config = TrainingConfig().with_overrides(SHRUNK + [f"--checkpoint_dir={tmp_path}"] + list(overrides))
    seed_everything(config.seed)
    generator, discriminator = build_players(config)
    return AdversarialTrainer(generator, discriminator, sandbox, config)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, model):
    return any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


def test_stage5_iteration_updates_both_players_with_rewards_in_range(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]")
    # a group with spread is guaranteed by mixing the reference solution into the samples
    batch = trainer.rollout(5, problems[:2])
    batch.completions[0] = problems[0].reference_solution
    rewards = trainer.score(batch)
    assert len(rewards) == 6
    assert all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rewards)
    assert rewards[0] == 1.0  # the reference passes its own tests
    assert "reference_tests" in batch.terms and "discriminator" not in batch.terms  # no disc score at stage 5
    advantages, valid, _ = trainer.compute_advantages(rewards, batch.group_size)
    assert valid[:3].all()
    before_g, before_d = _params(trainer.generator.model), _params(trainer.discriminator.model)
    stats = trainer.update_generator(batch, advantages, valid)
    assert _changed(before_g, trainer.generator.model)
    assert math.isfinite(stats["policy_loss"]) and stats["grad_norm"] > 0
    # the test writer learns only when its samples' CURE rewards differ; force a spread
    tb = batch.test_batch
    assert tb is not None and len(tb.sample_tests) == 2 * 2
    tb.tests[0] = ["assert x == 1"] if not tb.tests[0] else tb.tests[0]
    tb.sample_tests[0], tb.sample_tests[1] = [tb.tests[0][0]], []
    tb.passes_reference[0] = [True] * len(tb.tests[0])
    tb.candidate_results[0] = [[False] * len(tb.tests[0]) for _ in range(3)]
    trainer.update_discriminator(batch)
    assert _changed(before_d, trainer.discriminator.model)


def test_stage_1_scoring_head_learns_and_rewards_come_from_discriminator(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1]")
    batch = trainer.rollout(1, problems[:2])
    rewards = trainer.score(batch)
    assert set(batch.terms) == {"discriminator"}
    assert all(0.0 <= r <= 1.0 for r in rewards)
    head = trainer.discriminator.score_head
    before = head.weight.detach().clone()
    stats = trainer.update_discriminator(batch)
    assert not torch.equal(before, head.weight.detach())
    assert 0.0 <= stats["disc_accuracy"] <= 1.0 and stats["disc_loss"] > 0


def test_ablation_turns_discriminator_terms_off(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--use_discriminator=false")
    batch = trainer.rollout(5, problems[:2])
    trainer.score(batch)
    assert set(batch.terms) == {"reference_tests"} and batch.test_batch is None
    batch1 = trainer.rollout(1, problems[:2])
    trainer.score(batch1)
    assert batch1.terms == {} and batch1.rewards == [0.0] * 6


def test_full_run_writes_the_checkpoint_tree_with_its_keys(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 5]", "--plot=true")
    trainer.train(problems, eval_problems=problems[:2])
    for name in ("warmup", "stage_1", "stage_5", "best", "final"):
        assert os.path.isfile(tmp_path / name / "generator.pt"), name
        assert os.path.isfile(tmp_path / name / "discriminator.pt"), name
    gen = torch.load(tmp_path / "stage_5" / "generator.pt", map_location="cpu", weights_only=True)
    for key in ("model_state_dict", "optimizer_state_dict", "stage_id", "metrics", "model_name_or_path", "model_config", "step", "rng_state", "config"):
        assert key in gen, key
    assert gen["stage_id"] == 5
    metrics = json.loads((tmp_path / "stage_5" / "metrics.json").read_text())
    for section, keys in {"generator": ("avg_reward", "train_pass_rate"), "discriminator": ("loss", "accuracy", "test_validity")}.items():
        for key in keys:
            assert key in metrics[section], (section, key)
    assert "elapsed_s" in metrics
    config = json.loads((tmp_path / "final" / "training_config.json").read_text())
    assert TrainingConfig.from_dict(config) == trainer.config
    # best/ is the stage with the highest generator avg_reward, as hard links (no second copy)
    rewards = {n: json.loads((tmp_path / n / "metrics.json").read_text())["generator"]["avg_reward"] for n in ("stage_1", "stage_5")}
    winner = max(rewards, key=lambda n: (rewards[n], n == "stage_1"))  # a tie keeps the earlier stage
    best = os.stat(tmp_path / "best" / "generator.pt")
    assert best.st_ino == os.stat(tmp_path / winner / "generator.pt").st_ino
    assert os.stat(tmp_path / "final" / "generator.pt").st_ino == os.stat(tmp_path / "stage_5" / "generator.pt").st_ino
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["stage"] for l in lines] == [0, 1, 5]
    assert os.path.isfile(tmp_path / "stage_5.png")


def test_killed_mid_stage_resumes_at_the_next_stage(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 2, 3]", "--warmup.enabled=false")
    original = trainer.update_generator

    def killed(batch, *args):
        if batch.stage_id == 3:
            raise KeyboardInterrupt  # the process dies mid-stage 3
        return original(batch, *args)

    trainer.update_generator = killed
    with pytest.raises(KeyboardInterrupt):
        trainer.train(problems)
    assert sorted(os.listdir(tmp_path)) == ["best", "metrics.jsonl", "stage_1", "stage_2"]
    weights_2 = torch.load(tmp_path / "stage_2" / "generator.pt", weights_only=True)["model_state_dict"]

    resumed = make_trainer(tmp_path, sandbox, "--stages=[1, 2, 3]", "--warmup.enabled=false", "--generator_lr=1e-5")
    resumed.load_checkpoint(str(tmp_path / "stage_2"))
    assert resumed.completed_stage == 2
    # the optimizer state comes back, but this run's learning rate wins over the saved one
    assert resumed.generator_optimizer.state and resumed.generator_optimizer.param_groups[0]["lr"] == 1e-5
    for name, tensor in resumed.generator.model.state_dict().items():
        assert torch.equal(tensor, weights_2[name]), name
    seen = []
    original_stage = resumed.train_stage
    resumed.train_stage = lambda stage_id, *a, **k: seen.append(stage_id) or original_stage(stage_id, *a, **k)
    resumed.train(problems)
    assert seen == [3]
    assert {"stage_1", "stage_2", "stage_3", "best", "final"} <= set(os.listdir(tmp_path))
    stages = [json.loads(l)["stage"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert stages == [1, 2, 3]


def test_resume_from_another_model_is_one_clear_error(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--warmup.enabled=false")
    trainer.save_checkpoint(str(tmp_path / "stage_1"), 1, {})
    gen_path = tmp_path / "stage_1" / "generator.pt"
    saved = torch.load(gen_path, weights_only=True)
    saved["model_name_or_path"] = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    torch.save(saved, gen_path)
    with pytest.raises(UserError, match="Qwen2.5-Coder"):
        make_trainer(tmp_path, sandbox).load_checkpoint(str(tmp_path / "stage_1"))
    with pytest.raises(UserError, match="not found"):
        make_trainer(tmp_path, sandbox).load_checkpoint(str(tmp_path / "stage_4"))


def test_no_problems_is_one_clear_error(tmp_path, sandbox):
    trainer = make_trainer(tmp_path, sandbox)
    with pytest.raises(UserError, match="no training problems"):
        trainer.train([])


def test_informative_sampling_favours_families_whose_groups_had_spread():
    from types import SimpleNamespace

    from training.runtime.distributed import Distributed
    from training.sampling import ProblemSampler

    pool = [SimpleNamespace(family=f, id=f"{f}{i}") for f in ("taught", "hopeless") for i in range(10)]
    sampler = ProblemSampler(pool, "informative", batch_size=4, seed=0, global_step=0, dist=Distributed())
    # two code-stage groups of 3 samples: the "taught" one has spread, the "hopeless" one all fail
    for _ in range(10):
        sampler.note_spread([pool[0], pool[10]], 3, torch.tensor([True] * 3 + [False] * 3))
    assert sampler.family_spread["taught"] == pytest.approx(1.0)
    assert sampler.family_spread["hopeless"] < 0.15
    drawn = []
    for step in range(100):
        chosen = sampler.batch(iteration=step, global_step=step)
        assert len({p.id for p in chosen}) == 4  # distinct problems within a batch
        drawn += [p.family for p in chosen]
    share = drawn.count("hopeless") / len(drawn)
    assert 0.02 < share < 0.3  # rarer than the uniform 50%, but never dropped (the floor)


def test_informative_sampling_trains_a_stage(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--problem_sampling=informative", "--iterations_per_stage=2")
    trainer.train_stage(5, problems)
    assert set(trainer.sampler.family_spread) <= {p.family for p in problems} and trainer.sampler.family_spread
    assert all(0.0 <= v <= 1.0 for v in trainer.sampler.family_spread.values())


def test_warm_up_uses_the_configured_threads_and_restores_the_rl_setting(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, "--warmup.cpu_threads=2")
    seen = []
    monkeypatch.setattr(Warmup, "_run", lambda self, problems, test_problems: seen.append(torch.get_num_threads()) or {})
    torch.set_num_threads(1)
    trainer.warmup()
    assert seen == [2] and torch.get_num_threads() == 1


def test_each_stage_trains_at_its_own_generator_lr(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--generator_lr=[1e-5, 2e-5, 3e-5, 4e-5, 1e-4]", "--kl_beta=0")
    for stage_id, lr in ((2, 2e-5), (5, 1e-4)):
        trainer.train_stage(stage_id, problems)
        assert [g["lr"] for g in trainer.generator_optimizer.param_groups] == [lr]


@pytest.mark.parametrize("n, expected", [(3, lambda tests: tests[:3]), (0, lambda tests: tests)])
def test_test_writer_warm_up_imitates_the_first_n_reference_tests(tmp_path, sandbox, problems, monkeypatch, n, expected):
    trainer = make_trainer(tmp_path, sandbox, f"--warmup.tests_per_problem={n}", "--warmup.scoring_head_steps=0")
    pools = {}
    monkeypatch.setattr(Warmup, "supervised", lambda self, player, p, weights, steps, desc, monitor=None: pools.setdefault(desc, p) and 0.0)
    trainer.warmup(problems)
    (examples,) = pools["warm-up test writer"]
    written = {}
    for prompt, completion in examples:
        written.setdefault(prompt, []).extend(completion.split("\n"))
    assert len(written) == len(problems)
    for p in problems:
        assert written[build_test_prompt(p.prompt, p.entry_point)] == expected(p.tests)
    assert all(len(c.split("\n")) <= 3 for _, c in examples)  # one sample's worth of asserts each


@pytest.mark.parametrize("enabled", [True, False])
def test_test_writer_warm_up_adds_the_training_problems_tests(tmp_path, sandbox, problems, monkeypatch, enabled):
    trainer = make_trainer(tmp_path, sandbox, f"--warmup.tests_from_training_problems={str(enabled).lower()}",
                           "--warmup.scoring_head_steps=0")
    pools = {}
    monkeypatch.setattr(Warmup, "supervised", lambda self, player, p, weights, steps, desc, monitor=None: pools.setdefault(desc, p) and 0.0)
    rl_only = [p for p in load_curriculum("train", per_family=1) if p.family == "max_minus_min"]
    trainer.warmup(problems, test_problems=rl_only + problems[:2])  # two already in the warm-up set
    (examples,) = pools["warm-up test writer"]
    prompts = [prompt for prompt, _ in examples]
    expected = problems + (rl_only if enabled else [])
    assert {build_test_prompt(p.prompt, p.entry_point) for p in expected} == set(prompts)
    assert len(prompts) == len(expected)  # 3 tests = one example per problem, none twice


def test_tests_per_problem_must_not_be_negative():
    with pytest.raises(UserError, match="warmup.tests_per_problem"):
        TrainingConfig().with_overrides(["--warmup.tests_per_problem=-1"])


@pytest.mark.parametrize("chain_loss", [False, True])
def test_chain_loss_moves_the_supervised_span_back_to_the_end_of_the_problem(tmp_path, sandbox, problems, monkeypatch, chain_loss):
    trainer = make_trainer(tmp_path, sandbox, f"--warmup.chain_loss={str(chain_loss).lower()}", "--warmup.scoring_head_steps=0")
    pools = {}
    monkeypatch.setattr(Warmup, "supervised", lambda self, player, p, weights, steps, desc, monitor=None: pools.setdefault(desc, p) and 0.0)
    trainer.warmup(problems)
    stage_pools = pools["warm-up generator"]
    gold = [p for p in problems if p.gold_stages]
    assert gold and [len(pool) for pool in stage_pools] == [len(gold)] * 5
    for k, pool in enumerate(stage_pools, start=1):
        for p, (prompt, completion) in zip(gold, pool):
            chain = p.gold_stages + [p.reference_solution]
            # the model reads the same text either way; only where the loss starts moves
            assert prompt + completion == build_prompt(p.prompt, p.gold_stages[: k - 1], k) + chain[k - 1]
            if chain_loss:
                assert prompt == f"Problem:\n{p.prompt.strip()}\n\n"
                assert all(s.strip() in completion for s in chain[:k])
            else:
                assert completion == chain[k - 1]
