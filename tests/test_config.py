import json

import pytest

from training.config import TrainingConfig, describe_fields
from training.errors import UserError


def test_default_config_matches_users_guide():
    config = TrainingConfig(device="cpu")
    assert config.device == "cpu"
    assert config.generator_model == "tiny" and config.discriminator_model == "tiny"
    assert config.stages == [1, 2, 3, 4, 5]


def test_every_field_has_a_help_text():
    rows = describe_fields()
    assert len(rows) > 30
    assert all(help_text for _, _, help_text in rows), [k for k, _, h in rows if not h]


def test_overrides_are_typed_and_dotted():
    config = TrainingConfig().with_overrides(
        ["--iterations_per_stage=3", "--sandbox.workers=1", "--rewards.lookahead=0.5", "--kl_beta=0", "--stages=[5]",
         "--generator_lr=1e-4"]
    )
    assert config.generator_lr == 1e-4
    assert config.iterations(5) == 3  # one number applies to every stage
    per_stage = TrainingConfig().with_overrides(["--iterations_per_stage=[0, 1, 2, 3, 4]"])
    assert [per_stage.iterations(k) for k in range(1, 6)] == [0, 1, 2, 3, 4]
    assert config.iterations_per_stage == 3 and config.sandbox.workers == 1
    assert config.rewards.lookahead == 0.5 and isinstance(config.kl_beta, float)
    assert config.stages == [5]
    # the original is untouched
    assert TrainingConfig().sandbox.workers == 2


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--iterations_per_stag=3", "Did you mean 'iterations_per_stage'"),
        ("--sandbox.worker=1", "sandbox.worker"),
        ("--iterations_per_stage=many", "iterations_per_stage must be int"),
        ("--use_discriminator=1", "use_discriminator must be bool"),
        ("--stages=[7]", "stage numbers 1..5"),
        ("--iterations_per_stage=[1, 2]", "5 non-negative integers"),
        ("--iterations_per_stage=x", "iterations_per_stage must be int or list"),
        ("--kl_beta", "--key=value"),
        ("--seed.x=1", "not a section"),
    ],
)
def test_bad_overrides_name_the_key(arg, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.").replace("(", r"\(")):
        TrainingConfig().with_overrides([arg])


def test_yaml_round_trip_and_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nsandbox:\n  timeout_s: 1\nwarmup:\n  steps: 5\n")
    config = TrainingConfig.from_yaml(str(path))
    assert config.seed == 3 and config.sandbox.timeout_s == 1.0 and config.warmup.steps == 5
    out = tmp_path / "c.json"
    config.to_json(str(out))
    assert TrainingConfig.from_dict(json.loads(out.read_text())) == config
    path.write_text("sandbox:\n  timeout: 1\n")
    with pytest.raises(UserError, match="sandbox.timeout"):
        TrainingConfig.from_yaml(str(path))
    with pytest.raises(UserError, match="does not exist"):
        TrainingConfig.from_yaml(str(tmp_path / "missing.yaml"))


def test_sandbox_section_is_the_sandboxs_own_config(tmp_path):
    from sandbox import SandboxConfig

    config = TrainingConfig().with_overrides(["--sandbox.workers=1", "--sandbox.hide_paths=[/opt/data, /srv]"])
    assert type(config.sandbox) is SandboxConfig and config.sandbox.workers == 1
    assert config.sandbox.hide_paths == ("/opt/data", "/srv")  # a YAML list, kept as the tuple the sandbox takes
    out = tmp_path / "c.json"
    config.to_json(str(out))
    assert TrainingConfig.from_dict(json.loads(out.read_text())) == config
    # a checkpoint written when the section held three keys still loads, the rest at the sandbox's defaults
    old = {"sandbox": {"timeout_s": 2.0, "memory_mb": 512, "workers": 2}}
    assert TrainingConfig.from_dict(old).sandbox == SandboxConfig()
    assert ("sandbox.hide_paths", [], SandboxConfig.__dataclass_fields__["hide_paths"].metadata["help"]) in describe_fields()


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--sandbox.workers=0", "sandbox: workers must be at least 1"),
        ("--sandbox.timeout_s=0", "sandbox: timeout_s must be positive"),
        ("--sandbox.memory_mb=16", "sandbox: memory_mb below 32"),
        ("--sandbox.isolation=chroot", "sandbox: isolation must be 'auto' or one of"),
        ("--sandbox.hide_paths=/opt", "sandbox.hide_paths must be a list"),
        ("--sandbox.hide_paths=[1]", r"sandbox.hide_paths\[0\] must be str"),
    ],
)
def test_sandbox_limits_out_of_range_are_user_errors(arg, message):
    with pytest.raises(UserError, match=message):
        TrainingConfig().with_overrides([arg])


def test_shipped_configs_load():
    import glob

    paths = glob.glob("configs/*.yaml")
    assert "configs/default.yaml" in paths
    for path in paths:
        TrainingConfig.from_yaml(path)


def test_default_yaml_is_the_dataclass_default():
    # `python train.py` and `TrainingConfig()` in a notebook must describe the same run
    assert TrainingConfig.from_yaml("configs/default.yaml") == TrainingConfig()


def test_default_yaml_holds_no_second_copy_of_the_defaults():
    # TrainingConfig's defaults are the default run; a value written again in the YAML could drift from them
    import yaml

    with open("configs/default.yaml") as f:
        assert not yaml.safe_load(f), "configs/default.yaml should list only what differs from TrainingConfig()"


def test_generator_lr_takes_one_number_or_one_per_stage():
    one = TrainingConfig().with_overrides(["--generator_lr=2e-4"])
    assert [one.generator_lr_at(k) for k in (1, 5)] == [2e-4, 2e-4]
    per_stage = TrainingConfig().with_overrides(["--generator_lr=[1e-5, 1e-5, 1e-5, 1e-5, 1e-4]"])  # YAML reads 1e-5 as text
    assert [per_stage.generator_lr_at(k) for k in range(1, 6)] == [1e-5] * 4 + [1e-4]
    for bad in ("[1e-5, 1e-4]", "[1e-5, x, 1, 1, 1]", "-1"):
        with pytest.raises(UserError, match="generator_lr"):
            TrainingConfig().with_overrides([f"--generator_lr={bad}"])


def test_renamed_keys_still_load_with_one_warning_line(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="training.runtime.config_parsing"):
        config = TrainingConfig.from_dict(
            {"num_generated_tests": 3, "warmup": {"discriminator_steps": 7}, "best_metric": "pass_rate"},
            source="old/generator.pt",
        )
    assert config.test_samples == 3 and config.warmup.test_writer_steps == 7
    assert config.best_metric == "eval_pass_at_1"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all("\n" not in m and m.startswith("old/generator.pt: ") for m in messages)
    assert any("'num_generated_tests' is now 'test_samples'" in m for m in messages)
    # the old name on the command line too; a config holding both keeps the new name's value
    assert TrainingConfig().with_overrides(["--num_generated_tests=5"]).test_samples == 5
    assert TrainingConfig.from_dict({"num_generated_tests": 3, "test_samples": 6}).test_samples == 6


def test_counts_that_were_silently_raised_are_errors_now():
    with pytest.raises(UserError, match="test_samples must be at least 2"):
        TrainingConfig(test_samples=1)
    with pytest.raises(UserError, match="needs held-out problems"):
        TrainingConfig(best_metric="eval_pass_at_1", eval_problems="")
    assert TrainingConfig(best_metric="eval_pass_at_1").eval_problems  # the default has them


def test_a_checkpoint_with_the_old_names_loads_for_inference():
    from training.runtime.loading import config_from_checkpoint

    saved = {"config": {"num_generated_tests": 3, "warmup": {"discriminator_steps": 5}, "no_such_key": 1}}
    config = config_from_checkpoint(saved)
    assert (config.test_samples, config.warmup.test_writer_steps) == (3, 5)
