"""models/fast_sampler.py: the fast generation engine samples what model.generate samples.

Greedy tokens are compared with generate's token for token; the logits the loop
draws from with the model's own full forward; sampled tokens with softmax(logits / T)
by a chi-square test; EOS, min_new_tokens, left padding and prompt cutting with
the generate path's rollouts.
"""

import logging
import os

import pytest
import torch

from models.fast_sampler import FastSampler, sample_from_logits

from test_models import PROMPTS, make_model_dir, trained_generator  # noqa: F401  (trained_generator: a fixture)

# Prompts of very different lengths: the short ones are left-padded.
MIXED = PROMPTS + ["x", "Write a function that merges two sorted lists into one sorted list and returns it."]


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """A private cache for "tiny", and one torch thread (these models are too small to gain from two)."""
    old = os.environ.get("ADVCODE_CACHE")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["ADVCODE_CACHE"] = str(tmp_path_factory.mktemp("advcode-cache"))
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("ADVCODE_CACHE", None)
    else:
        os.environ["ADVCODE_CACHE"] = old


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {arch: make_model_dir(root, arch) for arch in ("gpt2", "llama")}


def both(gen, prompts, **kwargs):
    """The rollouts of the generate path and of the fast engine for the same call."""
    gen.generation_engine = "generate"
    slow = gen.sample(prompts, **kwargs)
    gen.generation_engine = "fast"
    assert gen._sampler() is not None, gen._fast_sampler.unsupported_reason()
    fast = gen.sample(prompts, **kwargs)
    return slow, fast


def assert_same_rollout(slow, fast):
    assert fast.completion_ids.shape == slow.completion_ids.shape
    assert torch.equal(fast.completion_ids, slow.completion_ids)
    assert torch.equal(fast.completion_mask, slow.completion_mask)
    assert torch.equal(fast.finished, slow.finished)
    assert torch.equal(fast.prompt_ids, slow.prompt_ids) and torch.equal(fast.prompt_mask, slow.prompt_mask)
    assert fast.texts == slow.texts


# --------------------------------------------------------------------------- greedy = generate


@pytest.mark.parametrize("arch", ["tiny", "gpt2", "llama"])
def test_greedy_tokens_equal_generate(arch, model_dirs):
    from models.generator import LLMGenerator

    gen = LLMGenerator(arch if arch == "tiny" else model_dirs[arch], "cpu")
    assert gen.generation_engine == "fast"
    for num_samples in (1, 2):
        slow, fast = both(gen, MIXED, num_samples=num_samples, max_new_tokens=12, temperature=0)
        assert fast.completion_ids.shape == (len(MIXED) * num_samples, 12)
        assert_same_rollout(slow, fast)
    assert_lean(gen._fast_sampler, arch != "gpt2", steps=2 * 11)
    # The 2-sample call's 11 decode steps attended to one copy of each prompt.
    assert gen._fast_sampler.shared_prefix_steps == (11 if arch != "gpt2" else 0)


def assert_lean(sampler, used: bool, steps: int = 1):
    """The decode ran through the lean step (at least `steps` times), or, when not `used`, never did."""
    if used:
        assert sampler.lean_reason() is None and sampler.lean_steps >= steps, sampler.lean_reason()
    else:
        assert sampler.lean_reason() is not None and sampler.lean_steps == 0


def test_lora_model_decodes_through_its_own_forward():
    """A peft-wrapped model is not vouched for: its LoRA deltas (made nonzero here) would be skipped."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", use_lora=True, lora_r=4, lora_alpha=8)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in gen.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    slow, fast = both(gen, MIXED, num_samples=2, max_new_tokens=12, temperature=0)
    assert_same_rollout(slow, fast)
    assert_lean(gen._fast_sampler, False)
    assert "wrapper" in gen._fast_sampler.lean_reason()


def test_lean_step_reads_the_weights_of_each_call():
    """Weights changed in place between calls are the ones the next call decodes with."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    before = both(gen, MIXED, max_new_tokens=12, temperature=0)[1]
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in gen.base_model.model.layers:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight))
    slow, fast = both(gen, MIXED, max_new_tokens=12, temperature=0)
    assert not torch.equal(fast.completion_ids, before.completion_ids)
    assert_same_rollout(slow, fast)
    assert_lean(gen._fast_sampler, True, steps=2 * 11)


def test_eos_and_early_stop_match_generate(trained_generator):
    slow, fast = both(trained_generator, MIXED, num_samples=2, max_new_tokens=40, temperature=0)
    # Rows end with EOS at different steps (some rows finish while others run, so the batch
    # shrinks), and the batch stops once all rows have, well before the budget.
    lengths = fast.completion_mask.sum(1)  # (N,)
    assert fast.finished.all() and len(set(lengths.tolist())) > 1
    assert fast.completion_ids.shape[1] == int(lengths.max()) < 40
    assert_same_rollout(slow, fast)


def test_min_new_tokens_matches_generate(trained_generator):
    free = trained_generator.sample(PROMPTS, max_new_tokens=30, temperature=0)
    first_eos = free.completion_mask.sum(1)  # (N,) EOS position + 1 where finished
    assert free.finished.all() and int(first_eos.min()) < 10  # EOS would come early without the floor
    slow, fast = both(trained_generator, PROMPTS, max_new_tokens=30, temperature=0, min_new_tokens=10)
    assert (fast.completion_mask.sum(1) > 10).all()  # no EOS among the first 10 tokens
    assert_same_rollout(slow, fast)


def test_long_prompts_are_cut_like_generate(model_dirs):
    from models.generator import LLMGenerator

    gen = LLMGenerator(model_dirs["llama"], "cpu")  # 256 positions
    long_prompt = "Count the vowels in a string s and return the count. " * 40
    slow, fast = both(gen, [long_prompt, "short"], max_new_tokens=16, temperature=0)
    assert fast.prompt_ids.shape[1] + fast.completion_ids.shape[1] <= 256
    assert_same_rollout(slow, fast)


@pytest.mark.parametrize("change, says", [
    ("training", "training mode"), ("float64", "not all one of"), ("hook", "hooks"),
    ("subclass", "not a Linear"), ("pretraining_tp", "pretraining_tp"), ("eager-only", None),
    ("flash_attention_2", "not sdpa or eager"), ("sliding_window", "sliding"),
])
def test_lean_step_refuses_what_it_cannot_vouch_for(change, says, tmp_path):
    """Each of these decodes through the model's own forward instead (the loop itself still runs where it can)."""
    from transformers import AutoModelForCausalLM

    from models.lean_decode import lean_unsupported_reason

    model = AutoModelForCausalLM.from_pretrained(make_model_dir(tmp_path, "qwen2" if change == "sliding_window" else "llama"))
    model.eval()
    if change == "training":
        model.train()
    elif change == "float64":
        model.to(torch.float64)
    elif change == "hook":
        model.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    elif change == "subclass":
        model.model.layers[1].self_attn.v_proj.__class__ = type("MyLinear", (torch.nn.Linear,), {})
    elif change == "pretraining_tp":
        model.config.pretraining_tp = 2
    elif change == "eager-only":
        model.set_attn_implementation("eager")  # supported: the control case
    elif change == "flash_attention_2":
        model.config._attn_implementation_internal = "flash_attention_2"
    elif change == "sliding_window":
        model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers
    reason = lean_unsupported_reason(model, model)
    if says is None:
        assert reason is None
    else:
        assert reason is not None and says in reason, reason
    if change not in ("flash_attention_2", "sliding_window"):  # the loop over the model's own forward runs these
        sampler = FastSampler(model, model, [2], 0)
        ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
        sampler.sample(ids, (ids != 0).long(), num_samples=2, max_new_tokens=4, temperature=0)
        assert sampler.lean_steps == (3 if says is None else 0)


# --------------------------------------------------------------------------- logits = full forward


@pytest.mark.parametrize("arch, prompts, G", [
    ("trained", MIXED, 2), ("tiny", MIXED, 2), ("tiny", PROMPTS[:1], 6),  # one prompt: no padding
    ("llama", MIXED, 2), ("llama-eager", MIXED, 2), ("gpt2", MIXED, 2),
])
def test_step_logits_equal_the_full_forward(arch, prompts, G, model_dirs, trained_generator):
    """Every step's logits, for every row still in the batch, equal the model's forward over prompt + tokens so far.

    Sampling with a third of the vocabulary as EOS ends rows at different steps, so
    the batch shrinks along the way; the G samples of a prompt share one prefill.
    Every decode step but GPT-2's runs through the lean step, its samples attending
    to one copy of their prompt's cache.
    """
    from models.generator import LLMGenerator

    if arch == "trained":
        gen = trained_generator
    else:
        gen = LLMGenerator("tiny" if arch == "tiny" else model_dirs[arch.split("-")[0]], "cpu")
    if arch == "llama-eager":
        gen.base_model.set_attn_implementation("eager")
    vocab = gen.model.config.vocab_size
    prompt_ids, prompt_mask = gen._encode_prompts(prompts, reserve=10)
    sampler = FastSampler(gen.model, gen.base_model, list(range(0, vocab, 3)), gen.tokenizer.pad_token_id)
    seen = []
    torch.manual_seed(0)
    out = sampler.sample(prompt_ids, prompt_mask, num_samples=G, max_new_tokens=10, temperature=1.0,
                         on_step=lambda step, rows, logits: seen.append((step, rows.clone(), logits.clone())))
    batch_sizes = [len(rows) for _, rows, _ in seen]
    assert batch_sizes[0] == G * len(prompts) and batch_sizes[-1] < batch_sizes[0]  # rows were dropped
    assert sampler.lean_steps == (len(seen) - 1 if arch != "gpt2" else 0), sampler.lean_reason()
    assert sampler.shared_prefix_steps == sampler.lean_steps
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(G, 0), prompt_mask.repeat_interleave(G, 0)
    checked = 0
    for step, rows, logits in seen:
        for j, row in enumerate(rows.tolist()):
            prompt = prompt_ids[row][prompt_mask[row].bool()]
            ids = torch.cat([prompt, out[row, :step]]).unsqueeze(0)
            with torch.no_grad():
                expected = gen.model(input_ids=ids).logits[0, -1].float()
            if step > 0 and out[row, step - 1] in sampler.eos_token_ids or out[row, :step].eq(gen.tokenizer.pad_token_id).any():
                continue  # a finished row still waiting to be dropped: its logits are never used
            torch.testing.assert_close(logits[j], expected, atol=1e-5, rtol=1e-5)
            checked += 1
    assert checked >= G * len(prompts) + 5


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "autocast"])
def test_lean_step_logits_equal_the_models_own_decode(dtype):
    """In each dtype it accepts, and under bf16 autocast, the lean step's logits are the model's own decode step's.

    In float32 the samples of a prompt attend to one copy of its cache; in the
    other dtypes, and under autocast, the lean step reads the copied cache.

    Both loops draw with the same seed from the same prefill, so while their
    logits agree they draw the same tokens and drop the same rows.
    """
    from contextlib import nullcontext

    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # norm weights other than 1, so that where a dtype rounds matters
        for param in gen.model.parameters():
            param.mul_(1 + 0.2 * torch.randn_like(param))
    if dtype in ("bfloat16", "float16"):
        gen.model.to(getattr(torch, dtype))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "autocast" else nullcontext
    prompt_ids, prompt_mask = gen._encode_prompts(MIXED, reserve=10)
    runs = []
    for lean in (True, False):
        sampler = FastSampler(gen.model, gen.base_model, list(range(0, gen.model.config.vocab_size, 3)),
                              gen.tokenizer.pad_token_id, autocast=autocast, lean=lean)
        seen = []
        torch.manual_seed(0)
        out = sampler.sample(prompt_ids, prompt_mask, num_samples=2, max_new_tokens=10, temperature=1.0,
                             on_step=lambda step, rows, logits: seen.append((rows.clone(), logits.clone())))
        runs.append((out, seen, sampler.lean_steps, sampler.shared_prefix_steps))
    (out, seen, lean_steps, shared_steps), (own_out, own_seen, own_lean_steps, _) = runs
    assert lean_steps == len(seen) - 1 and own_lean_steps == 0
    assert shared_steps == (lean_steps if dtype == "float32" else 0)
    assert len(seen) == len(own_seen) and len(seen[-1][0]) < len(seen[0][0])  # rows were dropped
    for (rows, logits), (own_rows, own_logits) in zip(seen, own_seen):
        assert torch.equal(rows, own_rows)
        torch.testing.assert_close(logits, own_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(out, own_out)


def test_shared_prefix_cache_refuses_the_models_own_decode():
    """The split cache serves the lean step only: a decode step through the model's own forward is one clear error."""
    from models.generator import LLMGenerator
    from models.lean_decode import SharedPrefixLayer

    gen = LLMGenerator("tiny", "cpu")
    prompt_ids, prompt_mask = gen._encode_prompts(PROMPTS[:2], reserve=4)
    sampler = FastSampler(gen.model, gen.base_model, [], gen.tokenizer.pad_token_id)
    cache = sampler._make_cache(prompt_mask, 3, 4, shared=True)
    assert all(isinstance(layer, SharedPrefixLayer) for layer in cache.layers)
    with torch.no_grad():
        gen.model(input_ids=prompt_ids, attention_mask=prompt_mask, past_key_values=cache, use_cache=True)
        assert cache.get_seq_length() == prompt_ids.shape[1]
        with pytest.raises(RuntimeError, match="decode steps go through the lean step"):
            gen.model(input_ids=prompt_ids[:, -1:].repeat_interleave(3, 0), past_key_values=cache, use_cache=True)


# --------------------------------------------------------------------------- sampled from softmax(logits / T)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """The p-value of Pearson's chi-square test of `counts` against `probs` (bins with expected count >= 5)."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum(0, keepdim=True)]).double()
    expected = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)]).double()
    if expected[-1] < 5:  # fold a small remainder into the largest bin
        observed, expected = observed[:-1].clone(), expected[:-1].clone()
        observed[0] += counts[~big].sum()
        expected[0] += probs[~big].sum() * n
    stat = ((observed - expected) ** 2 / expected).sum()
    df = torch.tensor(float(len(expected) - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(df / 2, stat / 2))


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.8)])
def test_sample_from_logits_follows_the_softmax(temperature, top_p):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5, 0.2])  # (V,)
    rows = 40_000
    g = torch.Generator().manual_seed(1)
    tokens = sample_from_logits(logits.expand(rows, -1), temperature, top_p, generator=g)  # (rows,)
    counts = torch.bincount(tokens, minlength=len(logits)).float()
    probs = (logits / temperature).softmax(-1)
    if top_p < 1:
        order = probs.argsort(descending=True)
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order[: int((probs[order].cumsum(0) < top_p).sum()) + 1]] = True  # smallest set reaching top_p
        assert counts[~keep].sum() == 0  # tokens cut by top-p never come
        probs = torch.where(keep, probs, 0.0)
        probs = probs / probs.sum()
    p = chi_square_p(counts, probs)
    assert p > 1e-3, p
    # The test can fail: the same draws against a slightly different distribution.
    wrong = (logits * 1.1 / temperature).softmax(-1) if top_p == 1 else (logits / temperature).softmax(-1)
    assert chi_square_p(counts, wrong) < 1e-6


def test_sample_from_logits_greedy_and_masked_tokens():
    logits = torch.tensor([[0.0, 3.0, float("-inf"), 3.0], [float("-inf"), float("-inf"), 0.0, float("-inf")]])
    assert sample_from_logits(logits, 0.0, 1.0).tolist() == [1, 2]  # first of equal maxima, as argmax
    draws = sample_from_logits(logits.repeat(500, 1), 1.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert (draws.view(500, 2)[:, 1] == 2).all() and not (draws.view(500, 2)[:, 0] == 2).any()


def test_first_tokens_of_the_model_follow_its_softmax():
    """Many samples of one prompt: the first tokens' counts fit softmax(first-step logits / T)."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    temperature = 0.05  # a random model's logits are nearly flat; sharpen them so that bins fill
    prompt_ids, prompt_mask = gen._encode_prompts(PROMPTS[:1], reserve=1)
    with torch.no_grad():
        logits = gen.model(input_ids=prompt_ids, attention_mask=prompt_mask).logits[0, -1].float()  # (V,)
    probs = (logits / temperature).softmax(-1)
    torch.manual_seed(3)
    rollout = gen.sample(PROMPTS[:1], num_samples=4000, max_new_tokens=1, temperature=temperature)
    counts = torch.bincount(rollout.completion_ids[:, 0], minlength=len(probs)).float()
    assert (probs >= 5 / 4000).sum() >= 4  # several bins, so the test has power
    assert chi_square_p(counts, probs) > 1e-3
    assert chi_square_p(counts, (logits / (1.3 * temperature)).softmax(-1)) < 1e-6


# --------------------------------------------------------------------------- choosing the engine


def test_unknown_engine_is_one_clear_error(model_dirs):
    from models.generator import LLMGenerator

    with pytest.raises(ValueError, match="generation_engine must be one of fast, generate, vllm, got 'sglang'"):
        LLMGenerator(model_dirs["gpt2"], "cpu", generation_engine="sglang")
    gen = LLMGenerator(model_dirs["gpt2"], "cpu", generation_engine="generate")
    assert gen.generation_engine == "generate" and gen._sampler() is None
    with pytest.raises(ValueError, match="fast, generate, vllm"):
        gen.generation_engine = "Fast"


def test_unsupported_model_falls_back_to_generate_with_one_warning(tmp_path, caplog):
    """A generation_config knob that generate would apply (here suppress_tokens) is not something the loop does."""
    from transformers import GenerationConfig

    from models.generator import LLMGenerator

    path = make_model_dir(tmp_path, "llama")
    GenerationConfig(suppress_tokens=[5, 6]).save_pretrained(path)
    gen = LLMGenerator(path, "cpu")
    with caplog.at_level(logging.WARNING, logger="models.base"):
        a = gen.sample(PROMPTS, max_new_tokens=4, temperature=0)
        b = gen.sample(PROMPTS, max_new_tokens=4, temperature=0)
    warnings = [r.getMessage() for r in caplog.records if "fast generation engine" in r.getMessage()]
    assert len(warnings) == 1 and "suppress_tokens" in warnings[0] and "model.generate" in warnings[0]
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.isin(a.completion_ids, torch.tensor([5, 6])).any()  # generate applied the config
