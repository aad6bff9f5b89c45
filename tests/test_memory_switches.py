"""The memory switches of TrainingConfig reach the models built by training.runtime.build.build_players.

tests/test_models.py checks what each switch does inside the wrapper; these
tests check the path a user takes: a config key (or YAML line), then
build_players, then the trainer's optimizers and reference model. See
docs/scaling.md for what each switch saves.
"""

import pytest
import torch
from peft import PeftModel

from training.adversarial_trainer import AdversarialTrainer
from training.runtime.build import build_players, seed_everything
from training.config import TrainingConfig

BASE = ["--device=cpu", "--cpu_threads=1"]


def build(*overrides):
    config = TrainingConfig().with_overrides(BASE + list(overrides))
    seed_everything(config.seed)
    generator, discriminator = build_players(config)
    # the sandbox is only used by rollouts and rewards, which these tests don't run
    trainer = AdversarialTrainer(generator, discriminator, None, config)
    return config, generator, discriminator, trainer


def optimizer_params(optimizer) -> set:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def trainable(module) -> set:
    return {id(p) for p in module.parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def plain():
    return build()


def test_defaults_leave_every_switch_off(plain):
    config, generator, discriminator, trainer = plain
    for player in (generator, discriminator):
        assert not player.base_model.is_activation_checkpointing
        assert not isinstance(player.model, PeftModel)
        assert {p.dtype for p in player.model.parameters()} == {torch.float32}  # auto on CPU
    assert optimizer_params(trainer.generator_optimizer) == trainable(generator.model)
    reference = trainer._make_reference()
    assert not reference.offload and not reference.adapters_disabled
    assert reference.model is not generator.model


def test_gradient_checkpointing_from_config():
    config, generator, discriminator, trainer = build("--gradient_checkpointing=true")
    assert config.gradient_checkpointing
    for player in (generator, discriminator):
        assert player.base_model.is_activation_checkpointing
    # the frozen reference never runs backward: no recomputation there
    assert not trainer._make_reference().model.is_activation_checkpointing


def test_bfloat16_from_yaml_key_gives_bf16_weights_and_adamw_states(tmp_path):
    path = tmp_path / "bf16.yaml"
    path.write_text("device: cpu\ndtype: bfloat16\n")
    config = TrainingConfig.from_yaml(str(path))
    seed_everything(config.seed)
    generator, discriminator = build_players(config)
    assert {p.dtype for p in generator.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in discriminator.model.parameters()} == {torch.bfloat16}
    assert discriminator.score_head.weight.dtype == torch.float32  # kept fp32 on purpose, and tiny
    # AdamW keeps its moments in the parameter's dtype: docs/scaling.md counts 2 bytes each
    trainer = AdversarialTrainer(generator, discriminator, None, config)
    generator.model.train()
    generator.sft_loss(["Add two numbers."], ["Use +."]).backward()
    trainer.generator_optimizer.step()
    state = next(iter(trainer.generator_optimizer.state.values()))
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16


def test_lora_from_config_trains_adapters_only():
    config, generator, discriminator, trainer = build("--use_lora=true", "--lora.r=4", "--lora.alpha=8", "--dtype=bfloat16")
    for player in (generator, discriminator):
        assert isinstance(player.model, PeftModel)
        assert player.model.peft_config["default"].r == 4 and player.model.peft_config["default"].lora_alpha == 8
        names = [n for n, p in player.model.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        # peft keeps adapters in fp32 over a bf16 base: docs/scaling.md counts them at 4 bytes
        assert {p.dtype for p in player.model.parameters() if p.requires_grad} == {torch.float32}
        assert {p.dtype for p in player.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    lora = {id(p) for n, p in generator.model.named_parameters() if "lora_" in n}
    assert optimizer_params(trainer.generator_optimizer) == lora
    head = {id(p) for p in discriminator.score_head.parameters()}
    disc_lora = {id(p) for n, p in discriminator.model.named_parameters() if "lora_" in n}
    assert optimizer_params(trainer.discriminator_optimizer) == disc_lora | head
    # the reference is the same model with its adapters off: no second copy of the weights
    reference = trainer._make_reference()
    assert reference.adapters_disabled and reference.model is generator.model


def test_offload_reference_from_config_keeps_the_copy_on_cpu():
    config, generator, discriminator, trainer = build("--offload_reference=true")
    reference = trainer._make_reference()
    assert reference.offload and reference.model is not generator.model
    assert {p.device.type for p in reference.model.parameters()} == {"cpu"}
    assert not any(p.requires_grad for p in reference.model.parameters())
