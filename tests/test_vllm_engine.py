"""models/vllm_engine.py: generation_engine=vllm samples what model.generate samples, from the latest weights.

The tests marked `needs_vllm` skip where vLLM is not installed (CI installs only
requirements.txt); they run on a CPU build of vLLM too, in one process:

    VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 python -m pytest tests/test_vllm_engine.py

The others (the config, the one-line error without vLLM, the weight fingerprint
and the LoRA merge) run everywhere.
"""

import copy
import os
import sys

import pytest
import torch

from models.vllm_engine import merged_state_dict, weights_version
from training.errors import UserError

from test_fast_sampler import MIXED, chi_square_p, tiny_cache  # noqa: F401  (tiny_cache: a fixture)
from test_models import ANSWERS, PROMPTS


@pytest.fixture(scope="module")
def needs_vllm():
    pytest.importorskip("vllm")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # what the engine sets too
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, on a CPU build: the tiny model needs little


def sft_steps(gen, steps: int, lr: float, answers=ANSWERS, **optimizer_kwargs):
    opt = torch.optim.AdamW(gen.trainable_parameters(), lr=lr, **optimizer_kwargs)
    for _ in range(steps):
        loss = gen.sft_loss(PROMPTS, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()


def rollouts(gen, engine, prompts, **kwargs):
    gen.generation_engine = engine
    return gen.sample(prompts, **kwargs)


def assert_same_rollout(a, b):
    assert a.completion_ids.shape == b.completion_ids.shape
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.finished, b.finished)
    assert a.texts == b.texts


# --------------------------------------------------------------------------- without vLLM


def test_config_takes_the_vllm_engine_and_its_settings():
    from training.config import TrainingConfig

    config = TrainingConfig().with_overrides(["--generation_engine=vllm", "--vllm.gpu_memory_utilization=0.45",
                                              "--vllm.enforce_eager=true"])
    assert config.generation_engine == "vllm"
    assert (config.vllm.gpu_memory_utilization, config.vllm.enforce_eager) == (0.45, True)
    for bad in ("0", "1.5"):
        with pytest.raises(UserError, match="vllm.gpu_memory_utilization must be in"):
            TrainingConfig().with_overrides([f"--vllm.gpu_memory_utilization={bad}"])


def test_choosing_vllm_without_it_is_one_line(monkeypatch):
    from models.generator import LLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(UserError) as error:
        LLMGenerator("tiny", "cpu", generation_engine="vllm")
    message = str(error.value)
    assert message.startswith("generation_engine=vllm needs vLLM: pip install -r requirements-vllm.txt")
    assert "\n" not in message
    gen = LLMGenerator("tiny", "cpu")
    with pytest.raises(UserError, match="needs vLLM"):
        gen.generation_engine = "vllm"
    assert gen.generation_engine == "fast"  # unchanged by the refused choice


def test_a_blocked_vllm_import_counts_as_not_installed(monkeypatch):
    """What load_players asks before it lets a vllm run's checkpoint sample with fast instead."""
    from models.vllm_engine import vllm_installed

    monkeypatch.setitem(sys.modules, "vllm", None)
    assert not vllm_installed()


@pytest.mark.parametrize("optimizer_kwargs", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_the_weights_version_moves_with_every_optimizer_step(optimizer_kwargs):
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    before = weights_version(gen.model)
    with torch.no_grad():
        gen.sample(PROMPTS, max_new_tokens=4)  # sampling writes no weights
    assert weights_version(gen.model) == before
    sft_steps(gen, 1, 1e-3, **optimizer_kwargs)
    after = weights_version(gen.model)
    assert after != before
    gen.load_model_state({k: v.clone() for k, v in gen.model_state_dict().items()})
    assert weights_version(gen.model) != after


def test_lora_weights_are_merged_under_the_base_names():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", use_lora=True)
    sft_steps(gen, 2, 1e-2)  # B starts at zero: after steps the adapters change the output
    merged = merged_state_dict(gen.base_model)
    expected = copy.deepcopy(gen.model).merge_and_unload().state_dict()
    assert set(merged) == set(expected)
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in expected)
    plain = LLMGenerator("tiny", "cpu").base_model.state_dict()
    assert set(merged) == set(plain)
    assert any(not torch.equal(merged[k], plain[k]) for k in plain)  # the adapters are in


# --------------------------------------------------------------------------- with vLLM


@pytest.fixture(scope="module")
def trained(needs_vllm):
    """A tiny generator after a short SFT run (it ends answers with EOS), sampling with vLLM."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    torch.manual_seed(0)
    sft_steps(gen, 40, 3e-3)
    return gen


def test_greedy_tokens_are_generates(trained):
    kwargs = dict(num_samples=2, max_new_tokens=40, temperature=0)
    slow = rollouts(trained, "generate", MIXED, **kwargs)
    fast = rollouts(trained, "vllm", MIXED, **kwargs)
    assert slow.finished.any()  # the EOS path is compared too
    assert_same_rollout(slow, fast)


def test_after_an_update_greedy_tokens_are_the_new_weights(trained):
    kwargs = dict(num_samples=1, max_new_tokens=24, temperature=0)
    # A prompt of more than one KV block, whose cached prefix the old weights computed.
    prompts = PROMPTS + [PROMPTS[0] * 24]
    first = rollouts(trained, "vllm", prompts, **kwargs)
    engine = trained._sampler()
    pushes = engine.pushes
    again = rollouts(trained, "vllm", prompts, **kwargs)
    assert engine.pushes == pushes  # unchanged weights are not pushed again
    assert_same_rollout(first, again)
    sft_steps(trained, 15, 3e-3, answers=["Return a + b.", "Return xs[::-1]."])
    new = rollouts(trained, "generate", prompts, **kwargs)
    assert all(a != b for a, b in zip(new.texts, first.texts))  # the update changed what greedy writes
    assert_same_rollout(new, rollouts(trained, "vllm", prompts, **kwargs))
    assert trained._sampler() is engine and engine.pushes == pushes + 1


def test_lora_greedy_tokens_are_generates(needs_vllm):
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", use_lora=True)
    torch.manual_seed(0)
    sft_steps(gen, 20, 1e-2)
    kwargs = dict(num_samples=1, max_new_tokens=24, temperature=0)
    assert_same_rollout(rollouts(gen, "generate", MIXED, **kwargs), rollouts(gen, "vllm", MIXED, **kwargs))


def test_sampled_rollouts_have_the_engines_layout(trained):
    G = 4
    rollout = rollouts(trained, "vllm", MIXED, num_samples=G, max_new_tokens=16, temperature=1.0, min_new_tokens=3)
    N = len(MIXED) * G
    assert rollout.completion_ids.shape[0] == N and rollout.completion_ids.shape[1] <= 16
    assert rollout.prompts == [p for p in MIXED for _ in range(G)]  # prompt-major
    prompt_ids, prompt_mask = trained._encode_prompts(MIXED, reserve=16)
    assert torch.equal(rollout.prompt_ids, prompt_ids.repeat_interleave(G, dim=0))
    lengths = rollout.completion_mask.sum(1)  # (N,) tokens up to and including EOS
    assert (lengths >= 3).all()  # no EOS before min_new_tokens
    pad = trained.tokenizer.pad_token_id
    assert (rollout.completion_ids[rollout.completion_mask == 0] == pad).all()
    assert len({tuple(row.tolist()) for row in rollout.completion_ids}) > len(MIXED)  # samples, not copies


@pytest.mark.parametrize("temperature, top_p", [(0.05, 1.0), (0.05, 0.8)])
def test_first_tokens_follow_softmax_with_top_p(needs_vllm, temperature, top_p):
    """Many samples of one prompt: the first tokens' counts fit softmax(logits / T) cut to top-p."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", generation_engine="vllm")
    prompt_ids, prompt_mask = gen._encode_prompts(PROMPTS[:1], reserve=1)
    with torch.no_grad():
        logits = gen.model(input_ids=prompt_ids, attention_mask=prompt_mask).logits[0, -1].float() / temperature
    probs = logits.softmax(-1)  # (V,)
    if top_p < 1.0:  # transformers' TopPLogitsWarper: drop the least likely tokens holding 1 - top_p
        sorted_probs, index = probs.sort()
        cut = sorted_probs.cumsum(-1) <= 1 - top_p
        cut[-1] = False
        probs = probs.masked_fill(cut.scatter(0, index, cut), 0.0)
        probs = probs / probs.sum()
    rollout = gen.sample(PROMPTS[:1], num_samples=4000, max_new_tokens=1, temperature=temperature, top_p=top_p)
    counts = torch.bincount(rollout.completion_ids[:, 0], minlength=len(probs)).float()
    assert (probs >= 5 / 4000).sum() >= 4  # several bins, so the test has power
    assert counts[probs == 0].sum() == 0  # nothing from beyond the top-p cut
    assert chi_square_p(counts, probs) > 1e-3
    assert chi_square_p(counts, (logits / 1.3).softmax(-1)) < 1e-6


def test_a_model_vllm_cannot_run_is_one_line(needs_vllm):
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", generation_engine="vllm")
    gen.base_model.__class__ = type("NoSuchArchForCausalLM", (type(gen.base_model),), {})
    with pytest.raises(UserError) as error:
        gen.sample(PROMPTS[:1], max_new_tokens=2)
    message = str(error.value)
    assert message.startswith("vLLM could not run 'tiny'") and "generation_engine=fast" in message
    assert "\n" not in message
