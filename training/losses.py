"""Losses of both players, and the optimizer step that applies them.

    compute_advantages      group-relative advantages, zero-spread groups masked
    group_spread            which groups have reward spread
    per_token_policy_loss   the clipped policy-gradient loss (+ k3 KL), per token
    clipped_policy_loss     that loss averaged over each sequence's tokens
    policy_gradient_backward  that loss over micro-batches of a rollout, reduced by loss_type
    policy_update           one update of a player on its rollout: the generator and
                            the test writer both learn through it
    scoring_head_step       one BCE step of the discriminator's scoring head
    optimizer_step          clip the averaged gradients, step, free them
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mean_per_seq(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's completion tokens: (n, C), (n, C) -> (n,)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def compute_advantages(rewards: list, group_size: int, eps: float = 1e-4, scale_rewards: str = "group", dist=None):
    """Group-relative advantages; groups with zero spread are masked out and counted.

    The advantage is reward - group mean, divided by `scale_rewards`: `group`
    the group's std, `batch` the std of every reward of the batch (over all
    ranks when `dist` is given), `none` nothing (Dr. GRPO: dividing by the
    group's std up-weights the groups whose rewards nearly agree). Zero-spread
    groups are masked out in every mode: their reward - mean is 0 anyway.
    Returns (advantages (N,), valid (N,) bool, frac_reward_zero_std).
    """
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)  # (B, G)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, unbiased=False)
    zero = ~group_spread(rewards, group_size)  # (B,)
    if scale_rewards == "group":
        advantages = ((r - mean) / (std + eps)).view(-1)  # (N,)
    elif scale_rewards == "batch":
        advantages = ((r - mean) / (batch_std(r, dist) + eps)).view(-1)
    elif scale_rewards == "none":
        advantages = (r - mean).view(-1)
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    valid = (~zero).repeat_interleave(group_size)  # (N,)
    advantages = torch.where(valid, advantages, torch.zeros_like(advantages))
    return advantages, valid, zero.float().mean().item()


def group_spread(rewards: list, group_size: int) -> torch.Tensor:
    """(B,) bool: which groups' rewards are not all equal (the groups an update can learn from)."""
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)
    return r.std(dim=1, unbiased=False) >= 1e-6


def batch_std(rewards: torch.Tensor, dist=None) -> float:
    """The population std of every reward of the batch, over all ranks when `dist` is given.

    Two passes (mean, then squared deviations) in float64, so the result is
    the same however the rows are spread over ranks.
    """
    total = dist.sum if dist is not None else float
    values = rewards.double().flatten()
    count = total(values.numel())
    mean = total(values.sum().item()) / count
    return math.sqrt(total(((values - mean) ** 2).sum().item()) / count)


def per_token_policy_loss(
    per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_per_token_logps: torch.Tensor | None = None,
    ref_per_token_logps: torch.Tensor | None = None,
    clip_range: float = 0.2,
    beta: float = 0.0,
    epsilon_high: float | None = None,
    importance_sampling_level: str = "token",
):
    """PPO's clipped objective per token, with the k3 KL to a reference when given.

    per_token_logps, completion_mask, old/ref: (n, C); advantages: (n,).
    The ratio is clipped to [1 - clip_range, 1 + epsilon_high]; epsilon_high
    None or 0 means clip_range (DAPO's clip-higher sets it above, so tokens
    the policy finds unlikely can still gain probability). With
    importance_sampling_level `sequence` (GSPO) each sequence has one ratio,
    exp of the mean over its completion tokens of logp - old logp, clipped as
    a whole and shared by its tokens. Without `old_per_token_logps` the
    samples are fresh (one pass over them): the ratio is
    exp(logp - logp.detach()) == 1, clipping does nothing, and the gradient
    is REINFORCE's, advantage times the score function.
    Returns (per-token loss (n, C), per-token KL (n, C) or None, clipped (n, C)
    bool: where the clip cut the gradient off).
    """
    adv = advantages.unsqueeze(1)  # (n, 1)
    old = old_per_token_logps if old_per_token_logps is not None else per_token_logps.detach()
    log_ratio = per_token_logps - old  # (n, C)
    if importance_sampling_level == "sequence":
        log_ratio = masked_mean_per_seq(log_ratio, completion_mask).unsqueeze(1).expand_as(per_token_logps)  # (n, C)
    elif importance_sampling_level != "token":
        raise ValueError(f"importance_sampling_level must be token or sequence, got {importance_sampling_level!r}")
    high = epsilon_high or clip_range
    ratio = torch.exp(log_ratio)  # (n, C)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + high)
    per_token_loss = -torch.min(ratio * adv, clipped * adv)  # (n, C)
    # the min takes the clipped term, whose gradient is 0, only on these tokens
    is_clipped = ((ratio < 1 - clip_range) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))  # (n, C)
    per_token_kl = None
    if ref_per_token_logps is not None:
        delta = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(delta) - delta - 1  # (n, C), k3 estimator, >= 0
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss, per_token_kl, is_clipped


def clipped_policy_loss(per_token_logps: torch.Tensor, advantages: torch.Tensor, completion_mask: torch.Tensor, *args, **kwargs):
    """`per_token_policy_loss` (same arguments) averaged over each sequence's completion tokens (GRPO's reduction).

    Returns (per-sequence loss (n,), per-sequence mean KL (n,) or None).
    """
    per_token_loss, per_token_kl, _ = per_token_policy_loss(per_token_logps, advantages, completion_mask, *args, **kwargs)
    kl = masked_mean_per_seq(per_token_kl.detach(), completion_mask) if per_token_kl is not None else None
    return masked_mean_per_seq(per_token_loss, completion_mask), kl


LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def summed_loss(per_token_loss: torch.Tensor, completion_mask: torch.Tensor, loss_type: str,
                max_completion_length: int | None = None) -> torch.Tensor:
    """A micro-batch's loss summed over its units, before the division by the norm; (n, C), (n, C) -> ().

    grpo: per-sequence token mean, summed over sequences (the norm counts sequences).
    dr_grpo: per-sequence token sum / max_completion_length, summed over sequences;
             a constant divisor, so a long sequence is not worth less per token.
    dapo: token sum (the norm counts tokens): every token weighs the same.
    """
    if loss_type == "grpo":
        return masked_mean_per_seq(per_token_loss, completion_mask).sum()
    if loss_type == "dr_grpo":
        return ((per_token_loss * completion_mask).sum(dim=1) / max_completion_length).sum()
    if loss_type == "dapo":
        return (per_token_loss * completion_mask).sum()
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")


def kept_rows(valid: torch.Tensor, dist) -> tuple[list, float]:
    """The rows with a nonzero advantage, and the norm that makes the gradient their mean over every rank.

    Each rank's loss is its share of the global mean; averaging the gradients
    over ranks divides by world_size again, so the norm scales it back up.
    The norm is 0 when no rank kept a row: nothing to learn from.
    """
    keep = valid.nonzero().flatten().tolist()
    return keep, dist.sum(len(keep)) / dist.world_size


def kept_tokens(completion_mask: torch.Tensor, keep: list, dist) -> float:
    """The norm that makes the gradient the mean over the completion tokens of the kept rows of every rank.

    Divided by world_size for the reason `kept_rows` gives.
    """
    tokens = completion_mask[keep].sum().item() if keep else 0
    return dist.sum(tokens) / dist.world_size


def micro_batches(keep: list, size: int) -> list:
    """Index tensors of at most `size` rows each, in order."""
    size = max(1, size)
    return [torch.tensor(keep[i : i + size]) for i in range(0, len(keep), size)]


def rollout_logps(player, rollout, idx: torch.Tensor, device, temperature: float, model=None, with_entropy: bool = False,
                  shared_prefix: bool = False):
    """Per-token log-probs (n, C) of rows `idx` of a rollout under `model` (default: the player's); and entropies.

    `shared_prefix`: rows that share a prompt run it once (`per_token_logps`);
    only asked for when set, so a player without the switch still serves the per-row path.
    """
    return player.per_token_logps(
        rollout.prompt_ids[idx].to(device), rollout.prompt_mask[idx].to(device),
        rollout.completion_ids[idx].to(device), rollout.completion_mask[idx].to(device),
        model=model, temperature=temperature, with_entropy=with_entropy, **({"shared_prefix": True} if shared_prefix else {}),
    )


def policy_gradient_backward(
    player, rollout, advantages: torch.Tensor, keep: list, norm: float, *,
    temperature: float, micro_batch_size: int, clip_range: float = 0.2,
    old_logps: list | None = None, ref_logps: list | None = None, beta: float = 0.0,
    loss_type: str = "grpo", max_completion_length: int | None = None,
    epsilon_high: float | None = None, importance_sampling_level: str = "token", shared_prefix: bool = False,
) -> tuple[float, float, float, float]:
    """Backward of the clipped loss over the kept rows of a rollout, micro-batch by micro-batch.

    Each micro-batch adds summed_loss(...) / norm to the gradients, so the
    accumulated gradient is the mean over `norm` units (sequences for grpo
    and dr_grpo, tokens for dapo) whatever the micro-batch size.
    `old_logps` / `ref_logps` are per-micro-batch lists as
    `micro_batches(keep, micro_batch_size)` cuts them. Returns (loss, sum of
    per-sequence KL, clipped completion tokens, sum of token entropies,
    completion tokens).
    """
    device = player.device
    loss_sum = kl_sum = clipped_sum = entropy_sum = token_sum = 0.0
    for c, idx in enumerate(micro_batches(keep, micro_batch_size)):
        completion_mask = rollout.completion_mask[idx].to(device).float()  # (n, C)
        per_token_logps, entropy = rollout_logps(player, rollout, idx, device, temperature, with_entropy=True,
                                                 shared_prefix=shared_prefix)  # (n, C)
        per_token_loss, per_token_kl, is_clipped = per_token_policy_loss(
            per_token_logps, advantages[idx].to(device), completion_mask,
            old_per_token_logps=old_logps[c] if old_logps is not None else None,
            ref_per_token_logps=ref_logps[c] if ref_logps is not None else None,
            clip_range=clip_range, beta=beta, epsilon_high=epsilon_high,
            importance_sampling_level=importance_sampling_level,
        )
        loss = summed_loss(per_token_loss, completion_mask, loss_type, max_completion_length) / norm
        loss.backward()
        loss_sum += loss.item()
        if per_token_kl is not None:
            kl_sum += masked_mean_per_seq(per_token_kl.detach(), completion_mask).sum().item()
        clipped_sum += (is_clipped.float() * completion_mask).sum().item()
        entropy_sum += (entropy * completion_mask).sum().item()
        token_sum += completion_mask.sum().item()
    return loss_sum, kl_sum, clipped_sum, entropy_sum, token_sum


def policy_update(
    player, optimizer, params: list, rollout, advantages: torch.Tensor, valid: torch.Tensor, dist, *,
    temperature: float, micro_batch_size: int, clip_range: float, max_grad_norm: float,
    epochs: int = 1, reference_model=None, beta: float = 0.0,
    loss_type: str = "grpo", max_completion_length: int | None = None,
    epsilon_high: float | None = None, importance_sampling_level: str = "token", shared_prefix: bool = False,
) -> dict:
    """One policy-gradient update of a player on its rollout: the generator's and the test writer's.

    Rows without advantage (zero-spread groups) are left out; `epochs` > 1
    passes re-use the rollout, so the ratio moves off 1 and the clip acts.
    With `reference_model`, the k3 KL to it is added with weight `beta`.
    `loss_type` picks the reduction (`summed_loss`); dr_grpo divides by
    `max_completion_length`, the rollout's token budget, which every rank
    shares (the rollout's own width stops at its longest completion).
    Returns kl (mean per sequence), policy_loss, grad_norm, clip_fraction
    (share of completion tokens whose gradient the clip cut off) and entropy
    (mean over the completion tokens, of the sampling distribution, on the
    rows the update learned from). `shared_prefix`: every pass runs each
    micro-batch's distinct prompts once (`per_token_logps`).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("loss_type dr_grpo needs max_completion_length, the rollout's token budget")
    stats = {"kl": 0.0, "policy_loss": 0.0, "grad_norm": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
    keep, norm = kept_rows(valid, dist)
    if not norm:  # every group had zero spread: nothing to learn from
        return stats
    if loss_type == "dapo":
        norm = kept_tokens(rollout.completion_mask, keep, dist)
    model, device = player.model, player.device

    def logps(policy):  # under softmax(logits / T), the distribution the samples came from
        return [rollout_logps(player, rollout, idx, device, temperature, model=policy, shared_prefix=shared_prefix).detach()
                for idx in micro_batches(keep, micro_batch_size)]

    with torch.no_grad(), dist.gathered(model):
        # one pass over fresh samples: the policy is the sampling policy, the ratio is 1,
        # and the old log-probs need no forward pass of their own
        old_logps = logps(model) if epochs > 1 else None
        ref_logps = logps(reference_model) if reference_model is not None else None
    model.train()
    kl_sum = loss_sum = clipped_sum = entropy_sum = token_sum = 0.0
    for _epoch in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        with dist.gathered(model):  # FSDP: ranks run different numbers of micro-batches
            loss, kl, clipped, entropy, tokens = policy_gradient_backward(
                player, rollout, advantages, keep, norm, temperature=temperature, micro_batch_size=micro_batch_size,
                clip_range=clip_range, old_logps=old_logps, ref_logps=ref_logps, beta=beta,
                loss_type=loss_type, max_completion_length=max_completion_length,
                epsilon_high=epsilon_high, importance_sampling_level=importance_sampling_level,
                shared_prefix=shared_prefix,
            )
            dist.sync_gradients(model, params)
        loss_sum, kl_sum = loss_sum + loss, kl_sum + kl
        clipped_sum, entropy_sum, token_sum = clipped_sum + clipped, entropy_sum + entropy, token_sum + tokens
        grad_norm = optimizer_step(optimizer, params, dist, max_grad_norm)
    return {"kl": kl_sum / max(len(keep), 1) / epochs, "policy_loss": loss_sum / epochs, "grad_norm": float(grad_norm),
            "clip_fraction": clipped_sum / max(token_sum, 1.0), "entropy": entropy_sum / max(token_sum, 1.0)}


def optimizer_step(optimizer, params: list, dist, max_grad_norm: float) -> torch.Tensor:
    """Clip the (already averaged) gradients, step, and free them; returns the norm before clipping."""
    grad_norm = dist.clip_grad_norm(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # no gradients held through rollouts
    return grad_norm


def discriminator_modules(discriminator) -> list:
    """The discriminator's LM and, where it has one, its scoring head."""
    head = getattr(discriminator, "score_head", None)
    return [discriminator.model] + ([head] if head is not None else [])


def trainable_parameters(modules: list) -> list:
    return [p for module in modules for p in module.parameters() if p.requires_grad]


def discriminator_step(discriminator, optimizer, dist, max_grad_norm: float) -> None:
    """Synchronise the discriminator's gradients (inside its `gathered` block), clip, step."""
    params = trainable_parameters(discriminator_modules(discriminator))
    dist.sync_gradients(discriminator.model, params)
    optimizer_step(optimizer, params, dist, max_grad_norm)


def scoring_head_step(discriminator, optimizer, items: list, labels: list, dist, max_grad_norm: float) -> dict:
    """One BCE step of the scoring head (and the LM under it) on labelled stage outputs."""
    if dist.sum(len(items)) == 0:
        return {}
    optimizer.zero_grad(set_to_none=True)
    stats = {}
    with dist.gathered(discriminator.model):
        if items:
            discriminator.model.train()
            logits = discriminator.score_batch(items, grad=True).float()  # (2M,)
            target = torch.tensor(labels, device=logits.device)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            loss.backward()
            accuracy = ((logits.detach() > 0).float() == target).float().mean().item()
            stats = {"disc_loss": loss.item(), "disc_accuracy": accuracy}
        discriminator_step(discriminator, optimizer, dist, max_grad_norm)
    return stats
