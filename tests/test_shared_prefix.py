"""models/shared_prefix.py: each distinct prompt of a micro-batch runs once, and nothing else changes.

Log-probs, entropies and the policy gradient of the shared-prefix path are
compared with the per-row path's on the tiny model, a GPT-2 and a Llama, with
left padding, prompts of mixed lengths, completions of different lengths and
groups cut by micro-batch boundaries. Every comparison also counts the tokens
that reached the model, so a silent fall back to the per-row path fails.
"""

import logging
from contextlib import contextmanager

import pytest
import torch

from models.base import Rollout
from models.shared_prefix import distinct_prompts, unsupported_reason
from training.losses import micro_batches, policy_gradient_backward, policy_update, rollout_logps
from training.runtime.distributed import Distributed

from test_fast_sampler import tiny_cache  # noqa: F401  (autouse: a private cache for "tiny", one torch thread)
from test_models import make_model_dir

# Prompts of very different lengths: all but the longest are left-padded.
PROMPTS = ["Reverse a list.", "x", "Write a function that merges two sorted lists into one sorted list and returns it."]
G = 3


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {"tiny": "tiny", **{arch: make_model_dir(root, arch) for arch in ("gpt2", "llama")}}


def make_rollout(gen, prompts=PROMPTS, group_size=G, width=7, seed=0) -> Rollout:
    """G rows per prompt, prompt-major; completions of lengths 1..width cycling over the rows, pad after."""
    prompt_ids, prompt_mask = gen._encode_prompts(prompts)  # (B, P)
    N = len(prompts) * group_size
    g = torch.Generator().manual_seed(seed)
    completion_ids = torch.randint(3, gen.tokenizer.vocab_size, (N, width), generator=g)  # (N, C)
    lengths = torch.arange(N) % width + 1  # (N,)
    completion_mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (N, C)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, gen.tokenizer.pad_token_id)
    return Rollout(prompt_ids=prompt_ids.repeat_interleave(group_size, 0),
                   prompt_mask=prompt_mask.repeat_interleave(group_size, 0),
                   completion_ids=completion_ids, completion_mask=completion_mask,
                   texts=[""] * N, prompts=[p for p in prompts for _ in range(group_size)], num_samples=group_size)


@contextmanager
def tokens_run(module):
    """A list that collects how many tokens each forward of `module` embeds."""
    counts = []
    handle = module.get_input_embeddings().register_forward_hook(lambda m, inputs, out: counts.append(inputs[0].numel()))
    try:
        yield counts
    finally:
        handle.remove()


def per_row_tokens(rollout, idx) -> int:
    return len(idx) * (rollout.prompt_ids.size(1) + rollout.completion_ids.size(1))


def shared_tokens(rollout, idx) -> int:
    """What the shared path embeds: each distinct prompt once, each row's completion but its last token.

    Where no two rows share a prompt it runs the per-row path.
    """
    distinct = len({tuple(rollout.prompt_ids[i].tolist()) for i in idx.tolist()})
    if distinct == len(idx):
        return per_row_tokens(rollout, idx)
    return distinct * rollout.prompt_ids.size(1) + len(idx) * (rollout.completion_ids.size(1) - 1)


def logps_both_ways(gen, rollout, idx, model=None, temperature=1.0):
    """(per-row (logps, entropy), shared (logps, entropy)); asserts which path each took by the tokens it ran."""
    module = gen.model if model is None else model.model
    out = []
    for shared, expected in ((False, per_row_tokens), (True, shared_tokens)):
        with torch.no_grad(), tokens_run(module) as counts:
            out.append(rollout_logps(gen, rollout, idx, gen.device, temperature, model=model, with_entropy=True,
                                     shared_prefix=shared))
        assert sum(counts) == expected(rollout, idx), (shared, counts)
    return out


# --------------------------------------------------------------------------- which rows share a prompt


def test_distinct_prompts_reads_only_what_the_mask_shows():
    ids = torch.tensor([[0, 5, 6], [9, 5, 6], [5, 5, 6], [0, 5, 6], [0, 0, 7]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1]])
    first, inverse = distinct_prompts(ids, mask)
    # rows 0, 1 and 3 differ only under the mask; row 2 has the same ids, but one more real token
    assert inverse[0] == inverse[1] == inverse[3]
    assert len({inverse[0].item(), inverse[2].item(), inverse[4].item()}) == 3
    assert sorted(first.tolist()) == [0, 2, 4]  # the first row of each prompt
    assert torch.equal(inverse[first], torch.arange(3))  # ... in the order of the prompts' numbers
    assert distinct_prompts(ids[[0, 2, 4]], mask[[0, 2, 4]]) is None  # no two rows share: nothing to share


# --------------------------------------------------------------------------- the same numbers


@pytest.mark.parametrize("arch", ["tiny", "gpt2", "llama"])
def test_logps_and_entropies_equal_the_per_row_path(arch, model_dirs):
    from models.generator import LLMGenerator

    gen = LLMGenerator(model_dirs[arch], "cpu")
    rollout = make_rollout(gen)
    assert rollout.prompt_mask.sum(1).unique().numel() == len(PROMPTS)  # mixed lengths, left-padded
    # the whole rollout, then micro-batches of 4 that cut groups of 3 apart (a row alone with its prompt included)
    for idx in [torch.arange(len(rollout))] + micro_batches(list(range(len(rollout))), 4):
        for temperature in (1.0, 0.7):
            (logps, entropy), (shared_logps, shared_entropy) = logps_both_ways(gen, rollout, idx, temperature=temperature)
            assert torch.allclose(shared_logps, logps, atol=1e-5, rtol=0)
            assert torch.allclose(shared_entropy, entropy, atol=1e-5, rtol=0)
            assert (shared_logps[rollout.completion_mask[idx] == 0] == 0).all()
            assert (logps[rollout.completion_mask[idx] == 1] < 0).all()  # real numbers were compared, not padding


def test_a_one_token_completion_needs_only_the_prompt_pass():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    rollout = make_rollout(gen, width=1)
    (logps, entropy), (shared_logps, shared_entropy) = logps_both_ways(gen, rollout, torch.arange(len(rollout)))
    assert torch.allclose(shared_logps, logps, atol=1e-5, rtol=0) and torch.allclose(shared_entropy, entropy, atol=1e-5, rtol=0)


def test_the_reference_model_and_lora_run_the_shared_path():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", use_lora=True, lora_r=4)
    torch.manual_seed(0)
    for p in gen.trainable_parameters():  # LoRA's B starts at 0: move it, so that the adapters count
        p.data.normal_(0.0, 0.05)
    rollout = make_rollout(gen)
    idx = torch.arange(len(rollout))
    reference = gen.make_reference_model()  # the same model with its adapters off
    (policy, _), (shared_policy, _) = logps_both_ways(gen, rollout, idx)
    (ref, _), (shared_ref, _) = logps_both_ways(gen, rollout, idx, model=reference)
    assert torch.allclose(shared_policy, policy, atol=1e-5, rtol=0) and torch.allclose(shared_ref, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(policy, ref, atol=1e-3)  # the adapters were on in one and off in the other


def grads_after(gen, rollout, keep, shared: bool, micro_batch_size: int) -> list:
    gen.model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    advantages = torch.randn(len(rollout), generator=g)
    with torch.no_grad():  # a reference a little off the policy, so that the KL term has a gradient
        ref_logps = [rollout_logps(gen, rollout, idx, gen.device, 1.0) - 0.1 * torch.rand(len(idx), rollout.completion_ids.size(1), generator=g)
                     for idx in micro_batches(keep, micro_batch_size)]
    policy_gradient_backward(gen, rollout, advantages, keep, float(len(keep)), temperature=1.0,
                             micro_batch_size=micro_batch_size, ref_logps=ref_logps, beta=0.04, shared_prefix=shared)
    return [(name, p.grad.clone()) for name, p in gen.model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("arch", ["tiny", "gpt2", "llama"])
def test_the_policy_gradient_equals_the_per_row_paths(arch, model_dirs):
    from models.generator import LLMGenerator

    gen = LLMGenerator(model_dirs[arch], "cpu")
    rollout = make_rollout(gen, prompts=PROMPTS + ["Sort a list of numbers."], group_size=4)
    keep = [i for i in range(len(rollout)) if i // 4 != 1]  # one group without spread, left out
    per_row = grads_after(gen, rollout, keep, shared=False, micro_batch_size=5)  # groups of 4 cut by batches of 5
    with tokens_run(gen.model) as counts:
        shared = grads_after(gen, rollout, keep, shared=True, micro_batch_size=5)
    # the reference pass runs each row whole; the loss pass each micro-batch's distinct prompts once
    batches = micro_batches(keep, 5)
    assert sum(counts) == sum(per_row_tokens(rollout, idx) + shared_tokens(rollout, idx) for idx in batches)
    scale = max(g.abs().max().item() for _, g in per_row)
    assert scale > 0
    for (name, a), (_, b) in zip(per_row, shared):
        assert torch.allclose(b, a, atol=1e-5 * scale, rtol=1e-4), (name, (a - b).abs().max().item(), scale)


def test_policy_update_moves_the_weights_as_the_per_row_path_does():
    """epochs=2 and a reference: the old, reference and loss passes all go through the shared path."""
    import copy

    from models.generator import LLMGenerator

    base = LLMGenerator("tiny", "cpu")
    rollout = make_rollout(base)
    rewards = torch.arange(len(rollout), dtype=torch.float32) % 2
    valid = torch.ones(len(rollout), dtype=torch.bool)
    results = {}
    for shared in (False, True):
        gen = copy.deepcopy(base)
        reference = gen.make_reference_model()
        for p in gen.model.parameters():  # the policy off its reference, so that the KL is not 0
            p.data.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        # SGD: a step proportional to the gradient (Adam's first step is lr * sign(grad), which a gradient near 0 flips)
        optimizer = torch.optim.SGD(gen.trainable_parameters(), lr=0.1)
        stats = policy_update(gen, optimizer, gen.trainable_parameters(), rollout, rewards - 0.5, valid, Distributed(),
                              temperature=1.0, micro_batch_size=4, clip_range=0.2, max_grad_norm=1.0, epochs=2,
                              reference_model=reference, beta=0.04, shared_prefix=shared)
        results[shared] = stats, [p.detach().clone() for p in gen.model.parameters()]
    (stats, weights), (shared_stats, shared_weights) = results[False], results[True]
    assert stats["kl"] > 0 and stats["grad_norm"] > 0
    for key in stats:
        assert shared_stats[key] == pytest.approx(stats[key], rel=1e-4, abs=1e-6), key
    before = list(base.model.parameters())
    assert any(not torch.equal(w, b) for w, b in zip(weights, before))
    for w, s in zip(weights, shared_weights):
        assert torch.allclose(s, w, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- when it steps aside


def test_all_distinct_prompts_run_the_per_row_path_at_its_cost():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    rollout = make_rollout(gen, group_size=1)
    idx = torch.arange(len(rollout))
    with torch.no_grad(), tokens_run(gen.model) as counts:
        rollout_logps(gen, rollout, idx, gen.device, 1.0, shared_prefix=True)
    assert counts == [per_row_tokens(rollout, idx)]  # one pass, no prompt pass before it


def test_gradient_checkpointing_falls_back_to_the_per_row_path(caplog):
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", gradient_checkpointing=True)
    gen.model.train()
    assert "gradient checkpointing" in unsupported_reason(gen.model)
    rollout = make_rollout(gen)
    idx = torch.arange(len(rollout))
    with caplog.at_level(logging.WARNING, logger="models.base"), tokens_run(gen.model) as counts:
        shared = rollout_logps(gen, rollout, idx, gen.device, 1.0, shared_prefix=True)
    assert counts == [per_row_tokens(rollout, idx)]
    assert "shared-prefix log-probs cannot run" in caplog.text and "gradient checkpointing" in caplog.text
    gen.model.eval()  # transformers keeps the cache under checkpointing outside training mode
    assert unsupported_reason(gen.model) is None
    with tokens_run(gen.model) as counts:
        again = rollout_logps(gen, rollout, idx, gen.device, 1.0, shared_prefix=True)
    assert sum(counts) == shared_tokens(rollout, idx)
    assert torch.allclose(again, shared, atol=1e-5, rtol=0)


def test_sliding_window_caches_and_remote_code_are_refused():
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=64, sliding_window=16)
    assert "DynamicSlidingWindowLayer" in unsupported_reason(AutoModelForCausalLM.from_config(config))
    assert "not a transformers model" in unsupported_reason(torch.nn.Linear(2, 2))
    remote = type("RemoteForCausalLM", (type(AutoModelForCausalLM.from_config(config)),), {"__module__": "remote_code.modeling"})
    assert "remote code" in unsupported_reason(remote(config))


def test_the_config_key_reaches_both_players_updates():
    from training.config import TrainingConfig
    from training.updates import policy_loss_settings

    assert policy_loss_settings(TrainingConfig())["shared_prefix"] is True
    assert policy_loss_settings(TrainingConfig().with_overrides(["--shared_prefix_loss=false"]))["shared_prefix"] is False


def test_a_model_that_returns_no_cache_falls_back_after_its_prompt_pass(caplog):
    import functools

    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    rollout = make_rollout(gen)
    idx = torch.arange(len(rollout))
    expected = rollout_logps(gen, rollout, idx, gen.device, 1.0)
    forward = gen.model.forward

    @functools.wraps(forward)
    def without_cache(*args, **kwargs):
        return forward(*args, **{**kwargs, "use_cache": False})

    gen.model.forward = without_cache
    with caplog.at_level(logging.WARNING, logger="models.base"), tokens_run(gen.model) as counts:
        logps = rollout_logps(gen, rollout, idx, gen.device, 1.0, shared_prefix=True)
    distinct = len(PROMPTS) * rollout.prompt_ids.size(1)
    assert counts == [distinct, per_row_tokens(rollout, idx)]  # the prompt pass, then every row whole
    assert "returned no usable cache" in caplog.text
    assert torch.allclose(logps, expected, atol=1e-6, rtol=0)
