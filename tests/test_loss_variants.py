"""The loss variants both players can learn through: loss_type, scale_rewards, epsilon_high, sequence-level ratios.

Each variant is checked on a tiny batch against numbers worked out by hand,
and its gradient against micro-batching and a split over ranks.
"""

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from training.config import TrainingConfig
from training.errors import UserError
from training.losses import (
    LOSS_TYPES, compute_advantages, kept_rows, kept_tokens, masked_mean_per_seq, micro_batches,
    per_token_policy_loss, policy_gradient_backward, policy_update,
)


class _Player:
    """A 'model' whose per-token log-probs are a parameter: row i of the rollout reads row i of the weights."""

    def __init__(self, logps):
        self.weights = torch.nn.Parameter(logps.detach().clone())
        self.model = torch.nn.Module()
        self.model.weights = self.weights
        self.device = torch.device("cpu")

    def per_token_logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask, model=None, temperature=1.0,
                        with_entropy=False):
        logps = self.weights[completion_ids[:, 0]] * completion_mask
        return (logps, torch.ones_like(logps) * completion_mask) if with_entropy else logps


class _OneProcess:
    """What policy_update needs of training.runtime.distributed.Distributed, for one process."""

    def __init__(self, world_size: int = 1, others: tuple = ()):
        self.world_size = world_size
        self.others = list(others)  # what the other ranks add to each sum, in call order

    def sum(self, value):
        return value + (self.others.pop(0) if self.others else 0)

    def gathered(self, model):
        return contextlib.nullcontext()

    def sync_gradients(self, model, params):
        pass

    def clip_grad_norm(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _rollout(mask):
    n, C = mask.shape
    return SimpleNamespace(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1),
        completion_ids=torch.arange(n).unsqueeze(1).repeat(1, C), completion_mask=mask,
    )


# Two sequences, 3 + 2 completion tokens. logp - old logp gives the ratios
#   row 0 (A = +1): 1.1, 1.0, 1.5   -> the last is above 1 + 0.2: clipped, no gradient
#   row 1 (A = -2): 0.9, 0.5, (pad) -> 0.5 is below 1 - 0.2: clipped, no gradient
# Per-token loss -min(r A, clip(r) A):   [[-1.1, -1.0, -1.2], [1.8, 1.6, .]]
# Its gradient in logp, -r A where not clipped: [[-1.1, -1.0, 0], [1.8, 0, 0]]
_LOGPS = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]])
_OLD = _LOGPS - torch.log(torch.tensor([[1.1, 1.0, 1.5], [0.9, 0.5, 1.0]]))
_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
_ADVANTAGES = torch.tensor([1.0, -2.0])

_BY_HAND = {
    # sequence means -3.3 / 3 = -1.1 and 3.4 / 2 = 1.7; their mean over the 2 sequences: 0.3.
    # gradient: -r A / (tokens of the row) / 2 sequences
    "grpo": (0.3, [[-1.1 / 6, -1.0 / 6, 0.0], [1.8 / 4, 0.0, 0.0]]),
    # every token alike: (-3.3 + 3.4) / 5 tokens = 0.02; gradient -r A / 5
    "dapo": (0.02, [[-0.22, -0.2, 0.0], [0.36, 0.0, 0.0]]),
    # sums over the budget of 4 tokens, -3.3 / 4 and 3.4 / 4, mean over 2 sequences: 0.0125; gradient -r A / 4 / 2
    "dr_grpo": (0.0125, [[-0.1375, -0.125, 0.0], [0.225, 0.0, 0.0]]),
}


def _norm(loss_type, mask, keep, dist):
    _, norm = kept_rows(torch.tensor([i in keep for i in range(len(mask))]), dist)
    return kept_tokens(mask, keep, dist) if loss_type == "dapo" else norm


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_type_by_hand(loss_type):
    player = _Player(_LOGPS)
    keep = [0, 1]
    loss, kl, clipped, _entropy, tokens = policy_gradient_backward(
        player, _rollout(_MASK), _ADVANTAGES, keep, _norm(loss_type, _MASK, keep, _OneProcess()),
        temperature=1.0, micro_batch_size=2, old_logps=[_OLD], loss_type=loss_type, max_completion_length=4,
    )
    expected_loss, expected_grad = _BY_HAND[loss_type]
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert torch.allclose(player.weights.grad, torch.tensor(expected_grad), atol=1e-6)
    assert (clipped, tokens) == (2.0, 5.0)  # 1.5 and 0.5 of the 5 completion tokens
    assert kl == 0.0  # no reference model


def _random_batch():
    torch.manual_seed(0)
    logps = -torch.rand(5, 6) * 3  # (n, C)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    # _Player's log-probs are 0 after a row's end; so are these
    old = (logps + 0.3 * torch.randn(5, 6)) * mask  # ratios around 1, some beyond the clip
    ref = (logps + 0.2 * torch.randn(5, 6)) * mask
    advantages = torch.tensor([1.5, -0.5, 0.25, -1.0, 0.75])
    return logps, old, ref, mask, advantages


def _gradient(rows, norm, size, loss_type, level, logps, old, ref, mask, advantages):
    player = _Player(logps)
    cut = micro_batches(rows, size)
    policy_gradient_backward(
        player, _rollout(mask), advantages, rows, norm, temperature=1.0, micro_batch_size=size,
        old_logps=[old[idx] for idx in cut], ref_logps=[ref[idx] for idx in cut], beta=0.1,
        loss_type=loss_type, max_completion_length=6, epsilon_high=0.28, importance_sampling_level=level,
    )
    return player.weights.grad


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_the_gradient_is_the_same_with_1_and_3_micro_batches(loss_type, level):
    batch = _random_batch()
    rows = [0, 1, 2, 3, 4]
    norm = _norm(loss_type, batch[3], rows, _OneProcess())
    one, three = (_gradient(rows, norm, size, loss_type, level, *batch) for size in (5, 2))  # 1 and 3 micro-batches
    assert len(micro_batches(rows, 2)) == 3
    assert torch.allclose(one, three, atol=1e-7)
    assert one.abs().sum() > 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_two_ranks_averaged_give_the_one_process_gradient(loss_type):
    batch = _random_batch()
    mask = batch[3]
    rows = [0, 1, 2, 3, 4]
    whole = _gradient(rows, _norm(loss_type, mask, rows, _OneProcess()), 2, loss_type, "token", *batch)
    # rank 0 holds rows 0-1 (2 rows, 3 + 6 tokens), rank 1 rows 2-4 (3 rows, 1 + 4 + 2 tokens);
    # each sum adds the other rank's count: rows first (kept_rows), then tokens (kept_tokens)
    ranks = []
    for mine, others in (([0, 1], (3, 7)), ([2, 3, 4], (2, 9))):
        norm = _norm(loss_type, mask, mine, _OneProcess(world_size=2, others=others))
        ranks.append(_gradient(mine, norm, 2, loss_type, "token", *batch))
    # sync_gradients averages the ranks' gradients
    assert torch.allclose((ranks[0] + ranks[1]) / 2, whole, atol=1e-7)


def test_kept_tokens_counts_every_rank_and_divides_by_world_size():
    # _MASK holds 3 + 2 completion tokens; the other rank kept 7
    assert kept_tokens(_MASK, [0, 1], _OneProcess(world_size=2, others=(7,))) == (5 + 7) / 2
    assert kept_tokens(_MASK, [1], _OneProcess(world_size=2, others=(7,))) == (2 + 7) / 2
    assert kept_tokens(_MASK, [], _OneProcess(world_size=2, others=(7,))) == 7 / 2


def test_scale_rewards_group_batch_none_by_hand():
    # groups of 2: (3, -1) mean 1, std 2; (1, 1) zero spread; (1.5, 0.5) mean 1, std 0.5
    rewards = [3.0, -1.0, 1.0, 1.0, 1.5, 0.5]
    # the whole batch: mean 1, squared deviations 4 + 4 + 0 + 0 + 0.25 + 0.25 = 8.5, std sqrt(8.5 / 6)
    minus_mean = torch.tensor([2.0, -2.0, 0.0, 0.0, 0.5, -0.5])
    expected = {"group": torch.tensor([1.0, -1.0, 0.0, 0.0, 1.0, -1.0]),
                "batch": minus_mean / math.sqrt(8.5 / 6),
                "none": minus_mean}
    for mode, advantages in expected.items():
        got, valid, frac_zero = compute_advantages(rewards, 2, eps=0.0, scale_rewards=mode)
        assert torch.allclose(got, advantages, atol=1e-6), mode
        assert valid.tolist() == [True, True, False, False, True, True]  # the zero-spread group stays out
        assert frac_zero == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages(rewards, 2, scale_rewards="rank")


def test_group_scaling_is_the_default():
    rewards = [0.2, 0.9, 0.4, 0.4, 1.0, 0.0, 0.3, 0.7]
    default, explicit = compute_advantages(rewards, 4), compute_advantages(rewards, 4, scale_rewards="group")
    assert torch.equal(default[0], explicit[0]) and torch.equal(default[1], explicit[1])


def _one_token(ratio, advantage, **clip):
    logps = torch.zeros(1, 1, requires_grad=True)
    old = -torch.log(torch.tensor([[ratio]]))  # exp(logp - old) = ratio
    loss, _, is_clipped = per_token_policy_loss(logps, torch.tensor([advantage]), torch.ones(1, 1), old, **clip)
    (grad,) = torch.autograd.grad(loss.sum(), logps)
    return loss.item(), grad.item(), bool(is_clipped.item())


def test_epsilon_high_clips_only_the_upper_side_wider():
    clip = {"clip_range": 0.2, "epsilon_high": 0.28}
    # 1.25 < 1.28: not clipped, loss -1.25 A and gradient -1.25 A for A = 1
    assert _one_token(1.25, 1.0, **clip) == (pytest.approx(-1.25), pytest.approx(-1.25), False)
    # 1.3 > 1.28: clipped to 1.28, no gradient
    assert _one_token(1.3, 1.0, **clip) == (pytest.approx(-1.28), 0.0, True)
    # without epsilon_high 1.25 is above 1 + 0.2: clipped to 1.2
    assert _one_token(1.25, 1.0, clip_range=0.2) == (pytest.approx(-1.2), 0.0, True)
    assert _one_token(1.25, 1.0, clip_range=0.2, epsilon_high=0.0) == (pytest.approx(-1.2), 0.0, True)
    # the lower side stays at 1 - clip_range: 0.75 < 0.8 is clipped for A = -1, loss -(0.8 * -1)
    assert _one_token(0.75, -1.0, **clip) == (pytest.approx(0.8), 0.0, True)
    # a ratio above the clip with A < 0 keeps its gradient: min takes the unclipped, worse term
    assert _one_token(1.3, -1.0, **clip) == (pytest.approx(1.3), pytest.approx(1.3), False)


def test_sequence_level_importance_sampling_by_hand():
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-1.0, -2.0, 0.0]], requires_grad=True)
    # row 0: token log-ratios 0.3, -0.3 -> mean 0, one ratio e^0 = 1 for the row: not clipped
    # row 1: token log-ratios 0.2, 0.4 -> mean 0.3, ratio e^0.3 = 1.3499 > 1.2: clipped
    old = logps.detach() - torch.tensor([[0.3, -0.3, 0.0], [0.2, 0.4, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    advantages = torch.tensor([1.0, 1.0])
    loss, _, is_clipped = per_token_policy_loss(logps, advantages, mask, old, importance_sampling_level="sequence")
    seq_loss = masked_mean_per_seq(loss, mask)
    (grad,) = torch.autograd.grad(seq_loss.sum(), logps)
    # row 0: -1 * 1; d/dlogp_t of -s A = -A s / 2 tokens = -0.5 on each; row 1: -1.2, no gradient
    assert torch.allclose(seq_loss, torch.tensor([-1.0, -1.2]))
    assert torch.allclose(grad, torch.tensor([[-0.5, -0.5, 0.0], [0.0, 0.0, 0.0]]))
    assert (is_clipped * mask).tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    # token level on row 0 differs: e^0.3 = 1.3499 is clipped to 1.2, e^-0.3 = 0.7408 keeps its gradient
    token, _, _ = per_token_policy_loss(logps, advantages, mask, old)
    token_seq = masked_mean_per_seq(token, mask)
    (token_grad,) = torch.autograd.grad(token_seq[0], logps)
    assert token_seq[0].item() == pytest.approx((-1.2 - math.exp(-0.3)) / 2)
    assert torch.allclose(token_grad[0], torch.tensor([0.0, -math.exp(-0.3) / 2, 0.0]))


def _old_clipped_gradient(logps, old, ref, mask, advantages, norm, clip_range=0.2, beta=0.1):
    """The loss as it was written before the variants, inline: what the defaults must reproduce bit for bit."""
    weights = logps.clone().requires_grad_()
    per_token_logps = weights * mask
    adv = advantages.unsqueeze(1)
    ratio = torch.exp(per_token_logps - old)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    per_token_loss = -torch.min(ratio * adv, clipped * adv)
    delta = ref - per_token_logps
    per_token_loss = per_token_loss + beta * (torch.exp(delta) - delta - 1)
    (masked_mean_per_seq(per_token_loss, mask).sum() / norm).backward()
    return weights.grad


def test_the_defaults_give_the_old_gradient_bit_for_bit():
    logps, old, ref, mask, advantages = _random_batch()
    rows = [0, 1, 2, 3, 4]
    player = _Player(logps)
    policy_gradient_backward(
        player, _rollout(mask), advantages, rows, 5.0, temperature=1.0, micro_batch_size=5,
        old_logps=[old], ref_logps=[ref], beta=0.1,
    )
    assert torch.equal(player.weights.grad, _old_clipped_gradient(logps, old, ref, mask, advantages, 5.0))


def test_policy_update_reports_the_clip_fraction():
    logps, _, _, mask, advantages = _random_batch()
    valid = torch.ones(5, dtype=torch.bool)
    for loss_type in LOSS_TYPES:
        player = _Player(logps)
        optimizer = torch.optim.SGD([player.weights], lr=1.0)
        one = policy_update(
            player, optimizer, [player.weights], _rollout(mask), advantages, valid, _OneProcess(),
            temperature=1.0, micro_batch_size=2, clip_range=0.2, max_grad_norm=100.0,
            loss_type=loss_type, max_completion_length=6,
        )
        assert one["clip_fraction"] == 0.0  # fresh samples: the ratio is 1
        assert not torch.equal(player.weights.detach(), logps)  # the update moved the policy
        # a second epoch sees the moved policy: big steps push ratios past the clip
        player = _Player(logps)
        optimizer = torch.optim.SGD([player.weights], lr=10.0)
        two = policy_update(
            player, optimizer, [player.weights], _rollout(mask), advantages, valid, _OneProcess(),
            temperature=1.0, micro_batch_size=2, clip_range=0.2, max_grad_norm=100.0, epochs=2,
            loss_type=loss_type, max_completion_length=6,
        )
        assert 0.0 < two["clip_fraction"] <= 0.5  # none clipped in the first epoch, of 2 x 16 tokens
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_update(
            player, optimizer, [player.weights], _rollout(mask), advantages, valid, _OneProcess(),
            temperature=1.0, micro_batch_size=2, clip_range=0.2, max_grad_norm=1.0, loss_type="dr_grpo",
        )


def test_config_keys_default_to_todays_loss_and_check_their_values():
    config = TrainingConfig()
    assert (config.loss_type, config.scale_rewards, config.epsilon_high, config.importance_sampling_level) == (
        "grpo", "group", 0.0, "token")
    config = config.with_overrides(["--loss_type=dapo", "--scale_rewards=none", "--epsilon_high=0.28",
                                    "--importance_sampling_level=sequence"])
    assert (config.loss_type, config.scale_rewards, config.epsilon_high, config.importance_sampling_level) == (
        "dapo", "none", 0.28, "sequence")  # YAML reads 'none' as a string, not as null
    for arg, message in [("--loss_type=ppo", "loss_type must be grpo, dapo or dr_grpo"),
                         ("--scale_rewards=std", "scale_rewards must be group, batch or none"),
                         ("--epsilon_high=-0.1", "epsilon_high must be 0"),
                         ("--importance_sampling_level=batch", "importance_sampling_level must be token or sequence")]:
        with pytest.raises(UserError, match=message):
            TrainingConfig().with_overrides([arg])
