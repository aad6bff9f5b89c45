"""TrainingConfig: every knob of a run, with a default and a one-line help each.

    config = TrainingConfig(device="cpu")
    config = TrainingConfig.from_yaml("configs/default.yaml")
    config = config.with_overrides(["--iterations_per_stage=4", "--sandbox.workers=1"])

Nested sections (`warmup`, `judge`, `rewards`, `sandbox`, `lora`, `vllm`) are dataclasses of
their own (config_sections.py) and take dotted keys on the command line; `sandbox` is the
sandbox's own `SandboxConfig`, so every limit it has is a key here and its
checks are the only ones. Values from YAML and from
`--key=value` are type-checked; an unknown key or a wrong type raises a
`UserError` that names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from models.base import GENERATION_ENGINES
from sandbox import SandboxConfig
from training.config_sections import JudgeConfig, LoraConfig, RewardConfig, VllmConfig, WarmupConfig, setting
from training.data.visibility import CHOICES as VISIBLE_CHOICES
from training.errors import UserError
from training.runtime.config_parsing import build_kwargs, parse_override, read_yaml_mapping, renamed_key, set_dotted
from training.runtime.metrics import TRACKERS


TEST_WRITER_INPUTS = ("problem", "code")  # what the test writer reads: the statement, or it and the candidate's code


# The default run's families: a 1.6M-parameter model learns about a dozen in
# minutes on a CPU, not all fifty; 8 have gold chains for warm-up, the last 4
# are RL-only. Evaluation uses their held-out instances.
DEFAULT_FAMILIES = (
    "affine", "sum_to_n", "reverse_string", "scale_list", "filter_greater", "sum_of_squares", "max_in_list",
    "count_vowels", "scale_then_filter", "max_minus_min", "reverse_words", "count_long_words",
)


@dataclass
class TrainingConfig:
    # --- run ---
    device: str = setting("auto", "cpu, cuda, or auto (cuda when available).")
    seed: int = setting(0, "Seed for model init, sampling and data order.")
    cpu_threads: int = setting(1, "torch CPU threads (0 = torch's default); 1 is fastest where sandbox workers share few cores.")
    dtype: str = setting("auto", "auto (fp32 weights; on CUDA, bf16 autocast), float32, bfloat16 or float16 (weights stored in it).")
    generation_engine: str = setting(
        "fast",
        "What samples under LLMGenerator.sample, for every path (rollouts, probe, test writer, evaluation, inference): "
        "fast (a decode loop over the model's forward with a preallocated KV cache, each prompt prefilled once for its "
        "samples; a model it cannot run exactly falls back to generate with one warning), generate (model.generate) "
        "or vllm (a vLLM engine in this process that follows the weights after every update; GPU machines, "
        "pip install -r requirements-vllm.txt; settings under vllm).",
    )
    vllm: VllmConfig = setting(VllmConfig(), "vLLM engine settings (with generation_engine=vllm).")
    generator_model: str = setting(
        "tiny", "Hub id or local directory of the generator; 'tiny' builds the embedded model, 'tiny-WIDTHxLAYERS' "
        "(e.g. tiny-256x4) the same recipe at another size.")
    discriminator_model: str = setting("tiny", "Hub id or local directory of the discriminator; 'tiny' = embedded model.")
    problems: str = setting("curriculum:train", "Training problems: curriculum:<split>, humaneval, or a .jsonl path.")
    visible_tests: int = setting(
        0,
        "Reference tests of each training problem the run may see (0 = all): the rest are hidden from the reward, "
        "the warm-up and the judge, and only logged (hidden_pass_rate, false_positive_rate). Evaluation uses all.",
    )
    visible_choice: str = setting(
        "first", "Which tests are visible with visible_tests: first (as the problem lists them) or random (seeded)."
    )
    eval_problems: str = setting("curriculum:heldout_instances", "Problems for the held-out evaluation after each stage.")
    eval_size: int = setting(0, "How many evaluation problems to use (0 = all).")
    families: list = setting(
        list(DEFAULT_FAMILIES),
        "Only curriculum problems of these families (warm-up, training, evaluation); empty = all fifty, for hardware "
        "bigger than a laptop CPU (the default 12 are what the tiny model learns in minutes).",
    )
    # --- curriculum over stages ---
    stages: list = setting([1, 2, 3, 4, 5], "Stages to train, in order (1..5); [] = the warm-up only.")
    iterations_per_stage: int | list = setting(
        [1, 1, 1, 1, 40],
        "RL iterations per stage: one number for every stage, or a list of 5 (stages 1..5). Stages 1-4, judged by "
        "the discriminator, get one cautious iteration each; the code stage, judged by execution, the RL budget.",
    )
    problems_per_batch: int = setting(8, "Problems per RL iteration.")
    problem_sampling: str = setting(
        "uniform",
        "How iterations pick problems: uniform (shuffled passes over the set), informative (families weighted by "
        "how often their groups had reward spread, so fewer groups are skipped) or edge (mostly problems whose "
        "running pass-rate estimate is strictly between 0 and 1: the edge of competence, where RL gains come from).",
    )
    edge_explore: float = setting(
        0.25,
        "problem_sampling=edge: the share of each batch drawn from every problem, so unseen problems get an estimate "
        "and problems off the edge can come back.",
    )
    dynamic_sampling: bool = setting(
        False,
        "DAPO's dynamic sampling: after the iteration's rollout, roll out more problems and keep groups with reward "
        "spread until each player's batch holds problems_per_batch of them, or max_rollout_batches rollouts were taken.",
    )
    max_rollout_batches: int = setting(
        3, "Most rollouts of problems_per_batch problems per update under dynamic_sampling (the iteration's own counts).",
    )
    group_size: int = setting(8, "Samples per problem (G) for group-relative advantages.")
    rollout_chain: str = setting(
        "prefix",
        "What a stage-k rollout samples: prefix (stage k after the generator's greedy stages 1..k-1, regenerated "
        "after every update, so no prefix outlives the policy that wrote it) or trajectory (stages k..5 sampled, "
        "the chain rewarded by execution, the gradient on every sampled stage).",
    )
    probe_problems: int = setting(
        16,
        "Training problems of the inference-style probe: whole chains regenerated greedily from the problem, scored "
        "on the tests the reward sees (probe_pass_rate); 0 = no probe.",
    )
    probe_every: int = setting(10, "Iterations between probes (and after a stage's last one).")
    max_new_tokens: list = setting([80, 96, 96, 80, 128], "Token budget per stage output, stages 1..5.")
    temperature: float = setting(1.0, "Sampling temperature of rollouts.")
    top_p: float = setting(1.0, "Nucleus sampling of rollouts.")
    # --- generator update ---
    generator_lr: float | list[float] = setting(
        [1e-5, 1e-5, 1e-5, 1e-5, 1e-4],
        "Generator learning rate in the adversarial stages: one number, or a list of 5 (stages 1..5). Stages 1-4 "
        "step 10x smaller: their scoring head is near chance on the tiny model, and a full step there moved "
        "held-out pass@1 by -1.6 to -7.5 points.",
    )
    kl_beta: float = setting(0.02, "Weight of the KL penalty to the frozen reference generator.")
    clip_range: float = setting(0.2, "PPO-style ratio clip for the policy-gradient loss.")
    epsilon_high: float = setting(
        0.0,
        "Upper ratio clip, 1 + epsilon_high, with clip_range the lower one (DAPO's clip-higher, e.g. 0.28); 0 = same "
        "as clip_range. With one policy epoch on fresh samples the ratio is 1 and clipping does nothing.",
    )
    importance_sampling_level: str = setting(
        "token",
        "token (PPO: one ratio per token) or sequence (GSPO: one ratio per sequence, exp of the mean token log-ratio, "
        "clipped as a whole). With one policy epoch on fresh samples the ratio is 1 and clipping does nothing.",
    )
    loss_type: str = setting(
        "grpo",
        "How token losses are averaged, for both players: grpo (mean over each sequence's tokens, then over "
        "sequences), dapo (mean over every completion token of the batch), dr_grpo (each sequence's token sum / its "
        "token budget, max_new_tokens of the stage or test_max_new_tokens, then mean over sequences).",
    )
    scale_rewards: str = setting(
        "group",
        "What reward - group mean is divided by, for both players: group (the group's std), batch (the std of the "
        "whole batch's rewards, every process's) or none (Dr. GRPO). Zero-spread groups are skipped in every mode.",
    )
    policy_epochs: int = setting(1, "Gradient passes over each rollout batch (>1 makes the clip active).")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    micro_batch_size: int = setting(32, "Sequences per forward/backward pass in updates (gradient accumulation).")
    shared_prefix_loss: bool = setting(
        True,
        "In updates, rows of a micro-batch that share a prompt run it once and their completions attend to its "
        "cache: the same log-probs and gradients to float rounding. Models it cannot run (gradient checkpointing, "
        "FSDP, remote code, sliding-window caches) run each row whole, with one warning.",
    )
    generator_steps: int = setting(1, "Generator updates per iteration before the discriminator's turn.")
    # --- discriminator ---
    use_discriminator: bool = setting(True, "False = ablation: execution reward only, no discriminator score or tests.")
    discriminator_lr: float = setting(5e-4, "Discriminator learning rate (scoring head, LM and test writer).")
    discriminator_steps: int = setting(1, "Discriminator updates per RL iteration, each on that iteration's batch.")
    test_samples: int = setting(
        4,
        "Test-writer samples per problem at the code stage (at least 2: their advantages are relative to each "
        "other); each sample keeps its first 3 asserts, and the problem's tests are their distinct union.",
    )
    test_writer_input: str = setting(
        "problem",
        "What the test writer reads: problem (the statement; test_samples samples per problem, every candidate "
        "runs all of them, CURE reward) or code (the statement and one candidate's code; one sample per "
        "candidate, whose valid tests score that candidate, attack reward in training/rewards.py).",
    )
    code_tests_scope: str = setting(
        "own",
        "test_writer_input=code: the written tests each candidate runs for its reward: own (those written for it, "
        "and the mistake book's) or group (those written for any candidate of its problem, and the book's).",
    )
    quiet_test_reward: float = setting(
        0.1, "test_writer_input=code: what each valid test that the candidate passes earns its writer.")
    quiet_test_cap: float = setting(
        0.3, "test_writer_input=code: the most a sample's quiet tests earn together (below 1, a catch's worth).")
    mistake_book_size: int = setting(
        0,
        "Per problem, the most valid tests kept that failed a candidate; later iterations run them on new "
        "candidates too, so a bug caught once keeps costing until it is fixed (0 = no book).",
    )
    mistake_book_max_age: int = setting(
        20, "Generator updates a test stays in the mistake book after the last candidate it failed.")
    test_labels: str = setting(
        "writer",
        "Who gives a written test its expected value in training: writer (the test as written, valid when the "
        "reference solution passes it) or reference (the reference's result on the writer's call fills it in; "
        "copies of a visible test and repeated calls earn nothing; training/extra_tests.py).",
    )
    min_valid_tests: int = setting(
        3, "test_labels=reference: a writer sample's validity is its valid tests over max(this, tests it wrote).")
    fuzz_tests: int = setting(
        0,
        "Per problem, calls made by type-aware mutation of its visible tests' arguments and labelled by the "
        "reference solution, which every candidate also runs for the discriminator_tests reward; needs no "
        "discriminator (0 = none).",
    )
    test_max_new_tokens: int = setting(96, "Token budget of one test-writer sample, in training and at inference.")
    test_temperature: float = setting(1.0, "Sampling temperature of the test writer.")
    test_writer_reward: str = setting(
        "mean",
        "How a test-writer sample's reward combines the CURE rewards of its tests: mean, or sum (an extra valid "
        "test never lowers it). A sample with no test scores -1 either way.",
    )
    invalid_test_penalty: float = setting(
        0.5,
        "Subtracted from the CURE reward of each test the reference solution fails (0 = CURE as published); "
        "see rewards.discriminator_tests for what 0.5 did.",
    )
    allow_forgeable_tests: bool = setting(
        False,
        "Let tests that the sandbox can only check inside the candidate's process (assert mode, which code that "
        "reads its own memory can forge; docs/sandbox.md) count in rewards. False: rewards leave them out, and "
        "forgeable_tests_excluded counts them.",
    )
    rewards: RewardConfig = setting(RewardConfig(), "Reward weights.")
    warmup: WarmupConfig = setting(WarmupConfig(), "Supervised warm-up.")
    judge: JudgeConfig = setting(JudgeConfig(), "The stage judge (the scoring head).")
    sandbox: SandboxConfig = setting(SandboxConfig(), "Sandbox limits.")
    # --- memory ---
    gradient_checkpointing: bool = setting(False, "Recompute activations in backward to save memory.")
    use_lora: bool = setting(False, "Train LoRA adapters (peft) instead of full weights.")
    lora: LoraConfig = setting(LoraConfig(), "LoRA settings (with use_lora).")
    offload_reference: bool = setting(False, "Keep the frozen reference model on CPU, moving it to the device per use.")
    # --- output ---
    best_metric: str = setting(
        "avg_reward",
        "What best/ maximises: avg_reward (the generator's mean reward in the stage) or eval_pass_at_1 "
        "(held-out pass@1 of the stage's checkpoint; needs eval_problems).",
    )
    checkpoint_dir: str = setting("checkpoints", "Where stage_N/, best/, final/ and metrics.jsonl are written.")
    save_optimizer: str = setting(
        "all",
        "Which checkpoint directories keep the optimizer state (what resuming needs besides the weights): all, "
        "latest (only the newest stage_N/ or warmup/ and final/; an older one drops it once a newer one is "
        "complete) or none (weights only). Resuming from a directory without it starts a fresh optimizer.",
    )
    log_every: int = setting(1, "Write a metrics line every N iterations.")
    plot: bool = setting(True, "Write a PNG of the training curves at the end of each stage.")
    progress: bool = setting(True, "Show tqdm progress bars.")
    report_to: list[str] = setting(
        [],
        "Experiment trackers that also get every metrics.jsonl scalar, at its global_step, from the main process: "
        "tensorboard (event files in <checkpoint_dir>/tensorboard/), wandb (honours WANDB_MODE, e.g. offline); "
        "empty = none. Their packages: pip install -r requirements-track.txt.",
    )

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise UserError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not isinstance(self.stages, list) or any(not isinstance(s, int) or not 1 <= s <= 5 for s in self.stages):
            raise UserError(f"stages must be a list of stage numbers 1..5 ([] = warm-up only), got {self.stages!r}")
        if isinstance(self.visible_tests, bool) or self.visible_tests < 0:
            raise UserError(f"visible_tests must be 0 (all) or a positive number, got {self.visible_tests!r}")
        if self.visible_choice not in VISIBLE_CHOICES:
            raise UserError(f"visible_choice must be {' or '.join(VISIBLE_CHOICES)}, got {self.visible_choice!r}")
        if self.rollout_chain not in ("prefix", "trajectory"):
            raise UserError(f"rollout_chain must be prefix or trajectory, got {self.rollout_chain!r}")
        if self.probe_problems < 0 or self.probe_every < 1:
            raise UserError("probe_problems must not be negative and probe_every must be at least 1")
        if len(self.max_new_tokens) != 5 or any(not isinstance(t, int) or t < 1 for t in self.max_new_tokens):
            raise UserError(f"max_new_tokens must list 5 positive integers (stages 1..5), got {self.max_new_tokens!r}")
        per_stage = self.iterations_per_stage
        if isinstance(per_stage, list):
            if len(per_stage) != 5 or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in per_stage):
                raise UserError(f"iterations_per_stage as a list must hold 5 non-negative integers, got {per_stage!r}")
        elif per_stage < 1:
            raise UserError(f"iterations_per_stage must be at least 1, got {per_stage}")
        lr = self.generator_lr
        if isinstance(lr, list):
            if len(lr) != 5 or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in lr):
                raise UserError(f"generator_lr as a list must hold 5 non-negative numbers (stages 1..5), got {lr!r}")
        elif lr < 0:
            raise UserError(f"generator_lr must be non-negative, got {lr}")
        for name in ("problems_per_batch", "policy_epochs", "generator_steps", "max_rollout_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise UserError(f"group_size must be at least 2 (advantages are relative to the group), got {self.group_size}")
        if self.warmup.writer_examples not in ("tests", "mutations"):
            raise UserError(f"warmup.writer_examples must be tests or mutations, got {self.warmup.writer_examples!r}")
        if isinstance(self.warmup.tests_per_problem, bool) or self.warmup.tests_per_problem < 0:
            raise UserError(f"warmup.tests_per_problem must be 0 (all) or a positive number, got {self.warmup.tests_per_problem!r}")
        if self.judge.target not in ("gold", "outcome"):
            raise UserError(f"judge.target must be gold or outcome, got {self.judge.target!r}")
        for name in ("replay_size", "batch_size"):
            if getattr(self.judge, name) < 1:
                raise UserError(f"judge.{name} must be at least 1, got {getattr(self.judge, name)}")
        if self.judge.seed_chains < 0 or self.judge.seed_steps < 0:
            raise UserError("judge.seed_chains and judge.seed_steps must not be negative")
        if not 0.0 <= self.judge.holdout < 1.0:
            raise UserError(f"judge.holdout must be in [0, 1), got {self.judge.holdout}")
        if not 0.0 <= self.warmup.stage5_fraction <= 1.0:
            raise UserError(f"warmup.stage5_fraction must be between 0 and 1, got {self.warmup.stage5_fraction}")
        if self.test_writer_reward not in ("mean", "sum"):
            raise UserError(f"test_writer_reward must be mean or sum, got {self.test_writer_reward!r}")
        if self.problem_sampling not in ("uniform", "informative", "edge"):
            raise UserError(f"problem_sampling must be uniform, informative or edge, got {self.problem_sampling!r}")
        if self.generation_engine not in GENERATION_ENGINES:
            raise UserError(f"generation_engine must be one of {', '.join(GENERATION_ENGINES)}, got {self.generation_engine!r}")
        if not 0.0 < self.vllm.gpu_memory_utilization <= 1.0:
            raise UserError(f"vllm.gpu_memory_utilization must be in (0, 1], got {self.vllm.gpu_memory_utilization}")
        if self.warmup.stop not in ("steps", "val_loss", "entropy"):
            raise UserError(f"warmup.stop must be steps, val_loss or entropy, got {self.warmup.stop!r}")
        if self.warmup.stop != "steps" and not 0.0 < self.warmup.val_share < 1.0:
            raise UserError(f"warmup.val_share must be between 0 and 1 (exclusive), got {self.warmup.val_share}")
        if self.warmup.eval_every < 1 or self.warmup.patience < 1:
            raise UserError("warmup.eval_every and warmup.patience must be at least 1")
        if not 0.0 <= self.edge_explore <= 1.0:
            raise UserError(f"edge_explore must be between 0 and 1, got {self.edge_explore}")
        if self.best_metric not in ("avg_reward", "eval_pass_at_1"):
            raise UserError(f"best_metric must be avg_reward or eval_pass_at_1, got {self.best_metric!r}")
        if self.save_optimizer not in ("all", "latest", "none"):
            raise UserError(f"save_optimizer must be all, latest or none, got {self.save_optimizer!r}")
        if self.best_metric == "eval_pass_at_1" and not self.eval_problems:
            raise UserError("best_metric=eval_pass_at_1 needs held-out problems: set --eval_problems (or use avg_reward)")
        if self.test_samples < 2:
            raise UserError(f"test_samples must be at least 2 (the writer's advantages are relative to the problem's samples), got {self.test_samples}")
        if self.test_max_new_tokens < 1:
            raise UserError(f"test_max_new_tokens must be at least 1, got {self.test_max_new_tokens}")
        if self.test_writer_input not in TEST_WRITER_INPUTS:
            raise UserError(f"test_writer_input must be {' or '.join(TEST_WRITER_INPUTS)}, got {self.test_writer_input!r}")
        if self.test_labels not in ("writer", "reference"):
            raise UserError(f"test_labels must be writer or reference, got {self.test_labels!r}")
        if self.fuzz_tests < 0 or self.min_valid_tests < 1:
            raise UserError(f"fuzz_tests must be 0 or more and min_valid_tests 1 or more, got {self.fuzz_tests} and {self.min_valid_tests}")
        if self.code_tests_scope not in ("own", "group"):
            raise UserError(f"code_tests_scope must be own or group, got {self.code_tests_scope!r}")
        if not 0.0 <= self.quiet_test_reward <= self.quiet_test_cap < 1.0:
            raise UserError("quiet_test_reward and quiet_test_cap need 0 <= quiet_test_reward <= quiet_test_cap < 1 "
                            f"(quiet tests must not outweigh one catch), got {self.quiet_test_reward} and {self.quiet_test_cap}")
        if self.mistake_book_size < 0 or self.mistake_book_max_age < 1:
            raise UserError("mistake_book_size must not be negative and mistake_book_max_age must be at least 1")
        if self.invalid_test_penalty < 0:
            raise UserError(f"invalid_test_penalty must be non-negative, got {self.invalid_test_penalty}")
        if self.temperature <= 0:
            raise UserError(f"temperature must be positive for rollouts, got {self.temperature}")
        if self.epsilon_high < 0:
            raise UserError(f"epsilon_high must be 0 (same as clip_range) or positive, got {self.epsilon_high}")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise UserError(f"importance_sampling_level must be token or sequence, got {self.importance_sampling_level!r}")
        if self.loss_type not in ("grpo", "dapo", "dr_grpo"):
            raise UserError(f"loss_type must be grpo, dapo or dr_grpo, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise UserError(f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        unknown = [t for t in self.report_to if t not in TRACKERS] if isinstance(self.report_to, list) else [self.report_to]
        if unknown:
            raise UserError(
                f"report_to: unknown tracker {unknown[0]!r}; give a list of {', '.join(TRACKERS)} "
                "(e.g. --report_to=[tensorboard]; empty = none)"
            )

    def generator_lr_at(self, stage_id: int) -> float:
        """The generator's learning rate at stage `stage_id`."""
        return float(_at_stage(self.generator_lr, stage_id))

    def iterations(self, stage_id: int) -> int:
        """RL iterations of stage `stage_id`."""
        return _at_stage(self.iterations_per_stage, stage_id)

    # ------------------------------------------------------------- conversions
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainingConfig":
        return cls(**build_kwargs(cls, data, prefix="", source=source))

    @classmethod
    def from_yaml(cls, path: str) -> "TrainingConfig":
        return cls.from_dict(read_yaml_mapping(path, "config file", "configs/"), source=path)

    def with_overrides(self, args: list[str]) -> "TrainingConfig":
        """A copy with `--key=value` (or `key=value`) overrides applied; dotted keys for sections."""
        data = self.to_dict()
        for arg in args:
            key, value = parse_override(arg)
            set_dotted(type(self), data, renamed_key(key, "command line"), value)
        return type(self).from_dict(data, source="command line")


def _at_stage(value, stage_id: int):
    """A setting given as one value for every stage, or as a list of 5 (stages 1..5)."""
    return value[stage_id - 1] if isinstance(value, list) else value


def describe_fields(cls=TrainingConfig, prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, default, help) for every field: what `train.py --help` lists."""
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe_fields(type(value), prefix + f.name + "."))
        else:
            # a tuple is given as a list on the command line, so show it as one
            shown = list(value) if isinstance(value, tuple) else value
            rows.append((prefix + f.name, shown, f.metadata.get("help", "")))
    return rows
