"""The one policy-gradient loss both players learn through."""

from types import SimpleNamespace

import torch

from training.losses import clipped_policy_loss, masked_mean_per_seq, policy_gradient_backward


def _batch():
    torch.manual_seed(0)
    logps = (-torch.rand(3, 5) * 3).requires_grad_()  # (n, C)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    advantages = torch.tensor([1.5, -0.5, 0.25])
    return logps, mask, advantages


def test_fresh_samples_give_the_reinforce_gradient_exactly():
    logps, mask, advantages = _batch()
    seq_loss, kl = clipped_policy_loss(logps, advantages, mask)
    (grad_clipped,) = torch.autograd.grad(seq_loss.sum(), logps)
    reinforce = masked_mean_per_seq(-logps * advantages.unsqueeze(1), mask)
    (grad_reinforce,) = torch.autograd.grad(reinforce.sum(), logps)
    assert kl is None
    assert torch.equal(grad_clipped, grad_reinforce)
    assert torch.allclose(seq_loss, -advantages)  # ratio 1: the loss is minus the advantage


def test_clip_and_kl_by_hand():
    logps = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-0.5, -1.0]])  # ratio e^0.5 on the first token, 1 on the second
    ref = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2)
    seq_loss, kl = clipped_policy_loss(logps, torch.tensor([2.0]), mask, old, ref, clip_range=0.2, beta=0.1)
    # token 1: ratio 1.6487 clipped to 1.2 -> -2.4, no gradient; token 2: -2.0
    # k3 KL: e^(ref - logp) - (ref - logp) - 1 = e^-1 + 1 - 1 on token 1, 0 on token 2
    k3 = torch.exp(torch.tensor(-1.0)).item()
    assert torch.allclose(seq_loss, torch.tensor([(-2.4 - 2.0 + 0.1 * k3) / 2]))
    assert torch.allclose(kl, torch.tensor([k3 / 2]))
    (grad,) = torch.autograd.grad(seq_loss.sum(), logps)
    # token 1: only the KL term moves it, 0.1 * (1 - e^-1) / 2; token 2: -2 * ratio / 2
    assert torch.allclose(grad, torch.tensor([[0.1 * (1 - k3) / 2, -1.0]]))


class _Player:
    """A 'model' whose per-token log-probs are a parameter: enough to check the micro-batching."""

    def __init__(self, logps):
        self.weights = torch.nn.Parameter(logps.detach().clone())
        self.device = torch.device("cpu")

    def per_token_logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask, model=None, temperature=1.0,
                        with_entropy=False):
        logps = self.weights[completion_ids[:, 0]] * completion_mask
        return (logps, torch.ones_like(logps) * completion_mask) if with_entropy else logps


def test_the_gradient_does_not_depend_on_the_micro_batch_size():
    logps, mask, advantages = _batch()
    rollout = SimpleNamespace(
        prompt_ids=torch.zeros(3, 1, dtype=torch.long), prompt_mask=torch.ones(3, 1),
        completion_ids=torch.arange(3).unsqueeze(1).repeat(1, 5), completion_mask=mask,
    )
    grads = []
    for size in (1, 3):
        player = _Player(logps)
        policy_gradient_backward(player, rollout, advantages, [0, 1, 2], norm=3.0, temperature=1.0, micro_batch_size=size)
        grads.append(player.weights.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
    assert grads[0].abs().sum() > 0
