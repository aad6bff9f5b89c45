"""The players' updates after a scored rollout: the generator's policy gradient, the test writer's, the scoring head's.

Both policy-gradient updates are `losses.policy_update` with the same loss
settings; they differ in whose samples they learn from and what rewards them.
The scoring head learns by balanced binary cross-entropy (gold vs generated),
unless the outcome judge (judge.py) trains it instead.
"""

from __future__ import annotations

import torch

from training.losses import (
    compute_advantages, discriminator_modules, group_spread, policy_update, scoring_head_step, trainable_parameters,
)
from training.extra_tests import writer_rewards as labelled_writer_rewards
from training.rewards import attack_writer_rewards, test_writer_rewards
from training.sampling import cap_groups


def policy_loss_settings(config) -> dict:
    """The policy-gradient loss settings that both players' updates share."""
    c = config
    return dict(micro_batch_size=c.micro_batch_size, clip_range=c.clip_range, max_grad_norm=c.max_grad_norm,
                loss_type=c.loss_type, epsilon_high=c.epsilon_high, importance_sampling_level=c.importance_sampling_level,
                shared_prefix=c.shared_prefix_loss)


def trained_groups(valid: torch.Tensor, group_size: int, dist) -> int:
    """How many groups an update learned from, over every rank."""
    return int(dist.sum(int(valid.sum()) // group_size))


def spread_groups(batches: list, config) -> list:
    """This rank's groups with reward spread in `batches`: the generator's, then the test writer's where it writes."""
    counts = [sum(int(group_spread(b.rewards, b.group_size).sum()) for b in batches)]
    if config.use_discriminator and all(b.test_batch is not None for b in batches):
        counts.append(sum(int(group_spread(writer_rewards(b, config), b.test_batch.samples_per_problem).sum())
                          for b in batches))
    return counts


def update_generator(generator, optimizer, batch, advantages: torch.Tensor, valid: torch.Tensor, config, dist,
                     reference_model=None) -> dict:
    """Clipped policy gradient over the completion tokens of `batch` (rollout.StageBatch), KL to the frozen reference."""
    S = batch.stages_per_completion  # a trajectory: every sampled stage's tokens share the chain's advantage
    budget = max(config.max_new_tokens[batch.stage_id - 1:batch.stage_id - 1 + S])
    return policy_update(
        generator, optimizer, trainable_parameters([generator.model]),
        batch.rollout, advantages.repeat(S), valid.repeat(S), dist,
        temperature=config.temperature, max_completion_length=budget,
        epochs=config.policy_epochs, reference_model=reference_model, beta=config.kl_beta,
        **policy_loss_settings(config),
    )


def writer_rewards(batch, config) -> list:
    """Each test sample's reward (rewards.py): CURE over every candidate, or the attack on the candidate it read."""
    if config.test_labels == "reference":
        return labelled_writer_rewards(batch.test_batch, batch.codes, batch.reference_results, batch.group_size,
                                       config.min_valid_tests, reads_code=config.test_writer_input == "code")
    if config.test_writer_input == "code":
        return attack_writer_rewards(batch.test_batch, batch.codes, config.quiet_test_reward, config.quiet_test_cap)
    return test_writer_rewards(
        batch.test_batch, batch.codes, batch.reference_results, batch.group_size,
        config.invalid_test_penalty, config.test_writer_reward,
    )


def update_test_writer(discriminator, optimizer, batch, config, dist) -> dict:
    """The same policy-gradient update as the generator's, on the test samples, rewarded by `writer_rewards`."""
    tb = batch.test_batch
    sample_rewards = writer_rewards(batch, config)
    advantages, valid, frac_zero = compute_advantages(
        sample_rewards, tb.samples_per_problem, scale_rewards=config.scale_rewards, dist=dist
    )
    valid = cap_groups(valid, tb.samples_per_problem, config.problems_per_batch, dist)
    trained = trained_groups(valid, tb.samples_per_problem, dist)
    params = trainable_parameters(discriminator_modules(discriminator))
    stats = policy_update(
        discriminator, optimizer, params, tb.rollout, advantages, valid, dist,
        temperature=config.test_temperature, max_completion_length=config.test_max_new_tokens,
        **policy_loss_settings(config),
    )
    return {"test_writer_reward": sum(sample_rewards) / len(sample_rewards), "test_writer_frac_reward_zero_std": frac_zero,
            "test_writer_trained_groups": trained,
            **{f"test_writer_{k}": stats[k] for k in ("policy_loss", "grad_norm", "clip_fraction", "entropy")}}


def update_scoring_head(discriminator, optimizer, batch, rng, config, dist) -> dict:
    """Balanced BCE: each problem with a gold text gives one real and one generated example (drawn with `rng`)."""
    k, G = batch.stage_id, batch.group_size
    items, labels = [], []
    for b, problem in enumerate(batch.problems):
        if not problem.gold_stages:
            continue
        fake = batch.completions[b * G + rng.randrange(G)]
        items.append((problem.prompt, batch.prefixes[b], k, problem.gold_stages[k - 1]))
        items.append((problem.prompt, batch.prefixes[b], k, fake))
        labels += [1.0, 0.0]
    return scoring_head_step(discriminator, optimizer, items, labels, dist, config.max_grad_norm)
