"""The sections of TrainingConfig (`warmup`, `rewards`, `judge`, `lora`, `vllm`), each a dataclass of its own.

They take dotted keys on the command line (`--warmup.steps=300`); every field
has a default and a one-line help text, as TrainingConfig's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def setting(default, help: str, **kwargs):
    """A dataclass field with a default and a help text (shown by `train.py --help`)."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = (lambda d=default: type(d)(**dataclasses.asdict(d))) if dataclasses.is_dataclass(default) else (
            lambda d=default: type(d)(d)
        )
        return field(default_factory=factory, metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)



@dataclass
class WarmupConfig:
    enabled: bool = setting(True, "Supervised warm-up on gold five-stage chains before the adversarial stages.")
    steps: int = setting(
        600,
        "Optimizer steps of generator warm-up: more steps of a smaller batch (600 of 16, not 300 of 32) take the "
        "same time and teach the model to copy names and constants.",
    )
    batch_size: int = setting(16, "Examples per warm-up step (one example = one stage of one problem).")
    lr: float = setting(3e-3, "Peak learning rate of warm-up (cosine decay to 10%).")
    stage5_fraction: float = setting(0.4, "Share of warm-up examples that are stage 5 (code); the rest spread over stages 1-4.")
    discriminator_from_generator: bool = setting(
        True, "Start the discriminator's LM from the warmed-up generator when their architectures match."
    )
    test_writer_steps: int = setting(150, "Optimizer steps of the test writer's warm-up on reference tests (0 = none).")
    tests_per_problem: int = setting(
        3,
        "Reference tests per problem the test writer imitates in warm-up: the first N as the problem lists them "
        "(the curriculum lists edge cases first); 0 = all. With all 8, random inputs included, 83% of what the "
        "tiny writer wrote was invalid.",
    )
    writer_examples: str = setting(
        "tests",
        "What the test writer imitates in warm-up: tests (the first tests_per_problem tests each problem shows the "
        "run) or mutations (tests_per_problem calls made by mutating those tests' arguments, labelled by the "
        "reference solution, none a copy of them; 0 = 8).",
    )
    tests_from_training_problems: bool = setting(
        True,
        "The test writer also imitates the reference tests of the RL training problems, so it writes tests for "
        "families without gold chains too (the default run's 4 RL-only ones); false = only the warm-up problems' tests.",
    )
    chain_loss: bool = setting(
        True,
        "Supervise the gold stages 1..k-1 inside a stage-k example's prompt as well as stage k (the loss starts "
        "after the problem statement).",
    )
    scoring_head_steps: int = setting(30, "Warm-up steps of the scoring head: gold stage texts vs the warmed-up generator's samples.")
    problems: str = setting("curriculum:warmup", "Problem source with gold chains for warm-up.")
    cpu_threads: int = setting(
        0, "torch CPU threads during warm-up (0 = the machine's cores shared among processes): no sandbox runs then."
    )
    stop: str = setting(
        "steps",
        "When the generator's warm-up stops: steps (after `steps`), val_loss (its loss on a validation slice of the "
        "warm-up problems has not fallen by min_delta for `patience` checks) or entropy (the mean token entropy of code "
        "it samples for that slice has fallen to entropy_floor), each at most `steps`. An over-trained warm-up leaves "
        "RL nothing to explore.",
    )
    val_share: float = setting(
        0.1, "stop=val_loss or entropy: the share of warm-up problems (by a hash of their id) held out as the validation slice.",
    )
    eval_every: int = setting(25, "stop=val_loss or entropy: generator steps between checks; each check is a row of the log.")
    patience: int = setting(3, "stop=val_loss: checks without improvement before the warm-up stops.")
    min_delta: float = setting(0.01, "stop=val_loss: the relative fall of the validation loss that counts as improvement.")
    entropy_floor: float = setting(
        0.35,
        "stop=entropy: nats per token of sampled code (T = temperature). RL from a warm-up near 0.37 nats lifted "
        "held-out pass@1; from one at 0.11 nats it lowered it.",
    )


@dataclass
class RewardConfig:
    # Weights of the registered reward functions (training/rewards.py). A weight
    # of 0 turns a term off; every term is still logged when it is computed.
    discriminator: float = setting(1.0, "Stages 1-4: the discriminator's probability that the output is reference-quality.")
    lookahead: float = setting(0.0, "Stages 1-4: pass rate after completing the chain to code greedily (costly).")
    reference_tests: float = setting(1.0, "Stage 5: pass fraction on the problem's reference tests.")
    discriminator_tests: float = setting(
        0.25,
        "Stage 5: pass fraction on discriminator tests validated on the reference. With invalid_test_penalty 0.5, "
        "0.25 raised the test writer's validity from 47% to 68% at the same held-out pass@1 (three seeds, docs/experiments.md).",
    )


@dataclass
class JudgeConfig:
    target: str = setting(
        "gold",
        "What the scoring head (the stage 1-4 reward) learns: gold (gold stage texts real, generated ones fake) or "
        "outcome (the probability that the chain's code passes the reference tests the reward sees, from labelled "
        "chains; training/judge.py).",
    )
    replay_size: int = setting(4096, "outcome: labelled chains kept (the most recent), in training and held out each.")
    seed_chains: int = setting(
        256, "outcome: chains sampled, run and labelled when a stage 1-4 starts with an empty replay."
    )
    seed_steps: int = setting(60, "outcome: BCE steps on the replay right after seeding it.")
    batch_size: int = setting(32, "outcome: labelled examples per BCE step.")
    holdout: float = setting(0.2, "outcome: share of problems (by id) whose chains are never trained on; they give judge_auc.")


@dataclass
class LoraConfig:
    r: int = setting(16, "LoRA rank.")
    alpha: int = setting(32, "LoRA alpha.")


@dataclass
class VllmConfig:
    gpu_memory_utilization: float = setting(
        0.3,
        "generation_engine=vllm: the share of GPU memory each player's vLLM engine takes (weights and KV cache). "
        "Both players hold one beside the trained models, so keep the two shares and training together under 1.",
    )
    enforce_eager: bool = setting(False, "generation_engine=vllm: no CUDA graphs (starts sooner, decodes slower).")
