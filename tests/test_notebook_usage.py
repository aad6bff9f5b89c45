"""The users' guide snippets ("Using Checkpoints in Code") run as written on a checkpoint of this project."""

import os

import pytest
import torch

from training.runtime import checkpoint as ckpt

from checkpoints_helper import write_checkpoints


@pytest.fixture(scope="module")
def stage_3(tmp_path_factory):
    """checkpoints/stage_3 as the trainer writes it, from untrained tiny players."""
    metrics = {"generator": {"avg_reward": 0.5}, "discriminator": {}}
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"), {"stage_3": (3, metrics)}) / "stage_3"


def test_load_weights_and_generate_a_stage_as_the_guide_shows(stage_3):
    # ---- the guide's snippet, verbatim but for the path ----
    from models.generator import LLMGenerator
    from reasoning.stages import get_stage
    from training.config import TrainingConfig

    config = TrainingConfig(device="cpu")
    generator = LLMGenerator(config.generator_model, config.device)
    checkpoint = torch.load(os.path.join(stage_3, "generator.pt"), map_location="cpu")
    generator.model.load_state_dict(checkpoint["model_state_dict"])
    stage_1 = get_stage(1)
    text = generator.generate_stage_output(
        problem="Implement a function that reverses a string",
        previous_stages=[],
        stage_id=1,
        prompt_template=stage_1.generator_prompt_template,
    )
    # ---- what it promises ----
    assert isinstance(text, str)
    assert checkpoint["stage_id"] == 3 and "optimizer_state_dict" in checkpoint and "metrics" in checkpoint
    loaded = generator.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in checkpoint["model_state_dict"].items())


def test_checkpoint_loads_with_weights_only(stage_3):
    # torch.load's safe mode (the default since torch 2.6) must accept every checkpoint file
    for name in (ckpt.GENERATOR_FILE, ckpt.DISCRIMINATOR_FILE):
        saved = torch.load(os.path.join(stage_3, name), map_location="cpu", weights_only=True)
        assert {"model_state_dict", "optimizer_state_dict", "stage_id", "metrics"} <= set(saved)


def test_load_players_rebuilds_both_from_the_checkpoint(stage_3):
    from training.runtime.loading import load_players

    generator, discriminator, config, metrics = load_players(str(stage_3), device="cpu")
    saved = torch.load(os.path.join(stage_3, "generator.pt"), map_location="cpu", weights_only=True)
    state = generator.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved["model_state_dict"].items())
    assert discriminator is not None and config.device == "cpu"
    assert metrics["generator"]["avg_reward"] == 0.5


@pytest.mark.slow
def test_resume_training_from_stage_3_as_the_guide_shows(stage_3, tmp_path):
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator
    from sandbox import Sandbox
    from training.adversarial_trainer import AdversarialTrainer
    from training.config import TrainingConfig
    from training.data.problems import load_problems

    config = TrainingConfig(
        device="cpu", checkpoint_dir=str(tmp_path), plot=False, progress=False, iterations_per_stage=1,
        problems_per_batch=2, group_size=2, max_new_tokens=[8, 8, 8, 8, 24], test_samples=2,
    )
    problems = load_problems("curriculum:train")[:4]
    generator = LLMGenerator(config.generator_model, config.device)
    discriminator = LLMDiscriminator(config.discriminator_model, config.device)
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        # ---- the guide's snippet ----
        trainer = AdversarialTrainer(generator, discriminator, sandbox, config)
        trainer.load_checkpoint(str(stage_3), load_optimizer=True)
        start_step = trainer.global_step
        before = {k: v.clone() for k, v in generator.model.state_dict().items()}
        for stage_id in range(4, 6):
            trainer.train_stage(stage_id, problems)
    # ---- what it promises ----
    assert trainer.completed_stage == 5
    assert trainer.global_step == start_step + 2  # one iteration per stage, continuing the saved count
    for stage_id in (4, 5):
        assert os.path.isfile(os.path.join(tmp_path, f"stage_{stage_id}", "generator.pt"))
    saved = torch.load(os.path.join(tmp_path, "stage_5", "generator.pt"), map_location="cpu", weights_only=True)
    assert saved["stage_id"] == 5
    after = generator.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    # groups with zero reward spread teach nothing; with these tiny batches a stage may move no weight, so
    # only check that any change came from training, and that the weights started from the checkpoint
    start = torch.load(os.path.join(stage_3, "generator.pt"), map_location="cpu", weights_only=True)["model_state_dict"]
    assert all(torch.equal(before[k], start[k]) for k in start)
