"""Losses of both players, and the optimizer step that applies them.

    compute_advantages      group-relative advantages, zero-spread groups masked
    clipped_policy_loss     the clipped policy-gradient loss (+ k3 KL), per sequence
    policy_gradient_backward  that loss over micro-batches of a rollout
    policy_update           one update of a player on its rollout: the generator and
                            the test writer both learn through it
    scoring_head_step       one BCE step of the discriminator's scoring head
    optimizer_step          clip the averaged gradients, step, free them
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean_per_seq(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's completion tokens: (n, C), (n, C) -> (n,)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def compute_advantages(rewards: list, group_size: int, eps: float = 1e-4):
    """Group-relative advantages; groups with zero spread are masked out and counted.

    Returns (advantages (N,), valid (N,) bool, frac_reward_zero_std).
    """
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)  # (B, G)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, unbiased=False)
    zero = std.squeeze(1) < 1e-6  # (B,)
    advantages = ((r - mean) / (std + eps)).view(-1)  # (N,)
    valid = (~zero).repeat_interleave(group_size)  # (N,)
    advantages = torch.where(valid, advantages, torch.zeros_like(advantages))
    return advantages, valid, zero.float().mean().item()


def clipped_policy_loss(
    per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_per_token_logps: torch.Tensor | None = None,
    ref_per_token_logps: torch.Tensor | None = None,
    clip_range: float = 0.2,
    beta: float = 0.0,
):
    """PPO's clipped objective per sequence, with the k3 KL to a reference when given.

    per_token_logps, completion_mask, old/ref: (n, C); advantages: (n,).
    Without `old_per_token_logps` the samples are fresh (one pass over them):
    the ratio is exp(logp - logp.detach()) == 1, clipping does nothing, and
    the gradient is REINFORCE's, advantage times the score function.
    Returns (per-sequence loss (n,), per-sequence mean KL (n,) or None).
    """
    adv = advantages.unsqueeze(1)  # (n, 1)
    old = old_per_token_logps if old_per_token_logps is not None else per_token_logps.detach()
    ratio = torch.exp(per_token_logps - old)  # (n, C)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    per_token_loss = -torch.min(ratio * adv, clipped * adv)  # (n, C)
    kl = None
    if ref_per_token_logps is not None:
        delta = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(delta) - delta - 1  # (n, C), k3 estimator, >= 0
        per_token_loss = per_token_loss + beta * per_token_kl
        kl = masked_mean_per_seq(per_token_kl.detach(), completion_mask)
    return masked_mean_per_seq(per_token_loss, completion_mask), kl


def kept_rows(valid: torch.Tensor, dist) -> tuple[list, float]:
    """The rows with a nonzero advantage, and the norm that makes the gradient their mean over every rank.

    Each rank's loss is its share of the global mean; averaging the gradients
    over ranks divides by world_size again, so the norm scales it back up.
    The norm is 0 when no rank kept a row: nothing to learn from.
    """
    keep = valid.nonzero().flatten().tolist()
    return keep, dist.sum(len(keep)) / dist.world_size


def micro_batches(keep: list, size: int) -> list:
    """Index tensors of at most `size` rows each, in order."""
    size = max(1, size)
    return [torch.tensor(keep[i : i + size]) for i in range(0, len(keep), size)]


def rollout_logps(player, rollout, idx: torch.Tensor, device, temperature: float, model=None) -> torch.Tensor:
    """Per-token log-probs (n, C) of rows `idx` of a rollout under `model` (default: the player's)."""
    return player.per_token_logps(
        rollout.prompt_ids[idx].to(device), rollout.prompt_mask[idx].to(device),
        rollout.completion_ids[idx].to(device), rollout.completion_mask[idx].to(device),
        model=model, temperature=temperature,
    )


def policy_gradient_backward(
    player, rollout, advantages: torch.Tensor, keep: list, norm: float, *,
    temperature: float, micro_batch_size: int, clip_range: float = 0.2,
    old_logps: list | None = None, ref_logps: list | None = None, beta: float = 0.0,
) -> tuple[float, float]:
    """Backward of the clipped loss over the kept rows of a rollout, micro-batch by micro-batch.

    Each micro-batch adds sum(per-sequence loss) / norm to the gradients, so
    the accumulated gradient is the mean over `norm` sequences whatever the
    micro-batch size. `old_logps` / `ref_logps` are per-micro-batch lists as
    `micro_batches(keep, micro_batch_size)` cuts them. Returns (loss, sum of
    per-sequence KL).
    """
    device = player.device
    loss_sum = kl_sum = 0.0
    for c, idx in enumerate(micro_batches(keep, micro_batch_size)):
        completion_mask = rollout.completion_mask[idx].to(device).float()  # (n, C)
        per_token_logps = rollout_logps(player, rollout, idx, device, temperature)  # (n, C)
        seq_loss, kl = clipped_policy_loss(
            per_token_logps, advantages[idx].to(device), completion_mask,
            old_per_token_logps=old_logps[c] if old_logps is not None else None,
            ref_per_token_logps=ref_logps[c] if ref_logps is not None else None,
            clip_range=clip_range, beta=beta,
        )
        loss = seq_loss.sum() / norm
        loss.backward()
        loss_sum += loss.item()
        if kl is not None:
            kl_sum += kl.sum().item()
    return loss_sum, kl_sum


def policy_update(
    player, optimizer, params: list, rollout, advantages: torch.Tensor, valid: torch.Tensor, dist, *,
    temperature: float, micro_batch_size: int, clip_range: float, max_grad_norm: float,
    epochs: int = 1, reference_model=None, beta: float = 0.0,
) -> dict:
    """One policy-gradient update of a player on its rollout: the generator's and the test writer's.

    Rows without advantage (zero-spread groups) are left out; `epochs` > 1
    passes re-use the rollout, so the ratio moves off 1 and the clip acts.
    With `reference_model`, the k3 KL to it is added with weight `beta`.
    Returns kl (mean per sequence), policy_loss and grad_norm.
    """
    stats = {"kl": 0.0, "policy_loss": 0.0, "grad_norm": 0.0}
    keep, norm = kept_rows(valid, dist)
    if not norm:  # every group had zero spread: nothing to learn from
        return stats
    model, device = player.model, player.device

    def logps(policy):  # under softmax(logits / T), the distribution the samples came from
        return [rollout_logps(player, rollout, idx, device, temperature, model=policy).detach()
                for idx in micro_batches(keep, micro_batch_size)]

    with torch.no_grad(), dist.gathered(model):
        # one pass over fresh samples: the policy is the sampling policy, the ratio is 1,
        # and the old log-probs need no forward pass of their own
        old_logps = logps(model) if epochs > 1 else None
        ref_logps = logps(reference_model) if reference_model is not None else None
    model.train()
    kl_sum = loss_sum = 0.0
    for _epoch in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        with dist.gathered(model):  # FSDP: ranks run different numbers of micro-batches
            loss, kl = policy_gradient_backward(
                player, rollout, advantages, keep, norm, temperature=temperature, micro_batch_size=micro_batch_size,
                clip_range=clip_range, old_logps=old_logps, ref_logps=ref_logps, beta=beta,
            )
            dist.sync_gradients(model, params)
        loss_sum, kl_sum = loss_sum + loss, kl_sum + kl
        grad_norm = optimizer_step(optimizer, params, dist, max_grad_norm)
    return {"kl": kl_sum / max(len(keep), 1) / epochs, "policy_loss": loss_sum / epochs, "grad_norm": float(grad_norm)}


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
