"""The outcome judge: labels from the chains the run executed, a bounded replay, AUC and Brier, learnability."""

import json
import math
import random

import pytest
import torch

from training.judge import JudgeReplay, LabelledChain, auc, brier, judge_quality, within_problem_auc
from training.losses import scoring_head_step
from training.data.problems import Problem
from training.rollout import StageBatch

from test_trainer import _changed, _params, make_trainer

PREFIX = ["understand", "plan", "steps", "invariants"]


def chain(i, passed, problem_id=None, words=PREFIX):
    return LabelledChain(problem_id or f"p{i}", f"problem {i}", tuple(words), passed)


def test_labels_come_from_the_tests_the_reward_sees(tmp_path, sandbox):
    # The problem's tests are what the run may see; a test it does not hold
    # (here `f(2) == 4`) never decides a label.
    problem = Problem(id="toy/0", prompt="Double x.", entry_point="f",
                      reference_solution="def f(x):\n    return 2 * x\n", tests=["assert f(0) == 0", "assert f(1) == 2"])
    codes = ["def f(x):\n    return 2 * x\n",     # passes: label 1
             "def f(x):\n    return x + 1\n",     # fails: label 0
             "def f(x):\n    return x * x * 2 if x < 2 else 0\n"]  # passes both, would fail f(2) == 4: label 1
    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", "--use_discriminator=false")
    batch = StageBatch(stage_id=5, problems=[problem], group_size=3, prefixes=[PREFIX], rollout=None, completions=codes)
    trainer.rollouts.execute(batch, with_tests=False)
    assert [c.passed for c in batch.labelled] == [True, False, True]
    assert all(c.stages == tuple(PREFIX) and c.problem_id == "toy/0" for c in batch.labelled)
    assert sandbox.run(codes[2], ["assert f(2) == 4"], "f").passed is False


def test_replay_keeps_the_most_recent_chains_up_to_its_bound():
    replay = JudgeReplay(capacity=5, holdout=0.0)
    replay.add([chain(i, i % 2 == 0) for i in range(12)])
    assert len(replay.train) == 5 and len(replay.holdout) == 0
    assert [c.problem_id for c in replay.train] == [f"p{i}" for i in range(7, 12)]
    replay = JudgeReplay(capacity=3, holdout=0.5)
    replay.add([chain(i, True) for i in range(40)])
    assert len(replay.train) == 3 and len(replay.holdout) == 3
    assert not {c.problem_id for c in replay.train} & {c.problem_id for c in replay.holdout}
    items, labels = replay.sample(6, random.Random(0), stages=(2,))
    assert len(items) == 6 and labels == [1.0] * 6
    assert all(item[2] == 2 and item[1] == PREFIX[:1] and item[3] == PREFIX[1] for item in items)


def test_auc_and_brier_on_known_cases():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auc([0.1, 0.9], [1, 0]) == 0.0
    assert auc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5        # ties count half
    assert auc([0.2, 0.3], [1, 1]) is None                # one class: undefined
    # within problems: p1's passing chain outranks its failing one, p2's does not
    chains = [chain(0, True, "p1"), chain(1, False, "p1"), chain(2, True, "p2"), chain(3, False, "p2"),
              chain(4, True, "p3")]
    assert within_problem_auc([0.9, 0.8, 0.1, 0.2, 0.5], chains) == 0.5
    assert within_problem_auc([0.9, 0.8, 0.3, 0.2, 0.5], chains) == 1.0
    assert within_problem_auc([0.9], chains[:1]) is None
    assert brier([1.0, 0.0], [1, 0]) == 0.0
    assert brier([0.5, 0.5], [1, 0]) == 0.25
    assert brier([0.9, 0.2], [0, 1]) == pytest.approx((0.81 + 0.64) / 2)


def test_judge_learns_a_word_that_decides_the_label(tmp_path, sandbox):
    trainer = make_trainer(tmp_path, sandbox, "--judge.target=outcome")
    rng = random.Random(0)
    fillers = ["loop", "sum", "index", "value", "list", "count", "check", "return"]

    def make(i):
        passed = rng.random() < 0.5
        words = [" ".join(rng.choice(fillers) for _ in range(4)) + (" alpha" if passed else " omega")
                 for _ in range(4)]
        return chain(i, passed, words=words)

    replay = JudgeReplay(capacity=1000, holdout=0.0)
    replay.add([make(i) for i in range(200)])
    held = [make(1000 + i) for i in range(40)]
    before = judge_quality(trainer.discriminator, held, stages=(4,))[4]["auc"]
    for _ in range(40):
        items, labels = replay.sample(16, rng)
        scoring_head_step(trainer.discriminator, trainer.discriminator_optimizer, items, labels, trainer.dist, 1.0)
    after = judge_quality(trainer.discriminator, held)
    assert all(after[k]["auc"] > 0.95 for k in (1, 2, 3, 4)), (before, after)
    assert after[4]["brier"] < 0.1


def test_outcome_judge_trains_a_run(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 5]", "--judge.target=outcome", "--judge.seed_chains=12",
                           "--judge.seed_steps=2", "--judge.holdout=0.5", "--judge.batch_size=4")
    head = _params(trainer.discriminator.score_head)
    metrics = trainer.train(problems)
    assert _changed(head, trainer.discriminator.score_head)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    seeded = [r for r in rows if "judge_seed_chains" in r]
    assert len(seeded) == 1 and seeded[0]["stage"] == 1 and seeded[0]["judge_seed_chains"] == 12
    stage1 = [r for r in rows if r.get("stage") == 1 and "reward_discriminator" in r]
    assert stage1 and all(0.0 <= r["reward_discriminator"] <= 1.0 for r in stage1)
    quality = [r for r in rows if "judge_brier" in r]
    assert len(quality) == 1 and 0.0 <= quality[0]["judge_brier"] <= 1.0
    # stage 5's rollouts, labelled by their own execution, join the replay
    assert len(trainer.judge.replay) == 12 + 2 * 3
    assert "judge" in json.load(open(tmp_path / "stage_1" / "metrics.json"))


def test_judge_cli_scores_heads_on_the_same_chains(tmp_path, capsys):
    from checkpoints_helper import write_checkpoints
    from training.evaluation.judge_report import main

    write_checkpoints(tmp_path, {"stage_1": (1, {}), "stage_2": (2, {})})
    out = tmp_path / "judge.json"
    args = ["--checkpoint", str(tmp_path / "stage_1"), "--compare", str(tmp_path / "stage_2"),
            "--limit", "1", "--n", "2", "--workers", "1", "--output", str(out)]
    assert main(args) == 0
    report = json.load(open(out))
    assert report["num_problems"] == 1 and report["n"] == 2
    assert set(report["judges"]) == {str(tmp_path / "stage_1"), str(tmp_path / "stage_2")}
    for per_stage in report["judges"].values():
        assert set(per_stage) == {"1", "2", "3", "4"}
        assert all(v["chains"] == 2 and 0.0 <= v["brier"] <= 1.0 for v in per_stage.values())
    assert "AUC stage 4" in capsys.readouterr().out
    assert main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert main(["--checkpoint", str(tmp_path / "stage_1"), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
