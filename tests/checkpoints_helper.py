"""Checkpoint directories as the trainer writes them, from untrained tiny players (for CLI and notebook tests)."""


def write_checkpoints(root, stages: dict, final: bool = False):
    """Write `root/<name>/` for each name -> (stage_id, metrics), in order; `final/` after the last when asked."""
    from sandbox import Sandbox
    from training.adversarial_trainer import AdversarialTrainer
    from training.runtime.build import build_players
    from training.config import TrainingConfig

    config = TrainingConfig(device="cpu", checkpoint_dir=str(root), plot=False, progress=False)
    generator, discriminator = build_players(config)
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=1) as sandbox:
        trainer = AdversarialTrainer(generator, discriminator, sandbox, config)
        metrics = {}
        for name, (stage_id, metrics) in stages.items():
            trainer.save_checkpoint(str(root / name), stage_id, metrics)
            trainer.completed_stage = stage_id
        if final:
            trainer.save_final(metrics)
    return root
