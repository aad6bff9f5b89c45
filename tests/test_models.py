"""models/: the tiny default, LLMGenerator and LLMDiscriminator on several architectures."""

import os

import pytest
import torch

from training.errors import UserError


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """Build "tiny" into a private cache so the tests never touch the user's.

    One thread: these models are too small to gain from two, and on a shared
    2-core box two threads run many times slower whenever the other core is busy.
    """
    old = os.environ.get("ADVCODE_CACHE")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("advcode-cache")
    os.environ["ADVCODE_CACHE"] = str(path)
    yield path
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("ADVCODE_CACHE", None)
    else:
        os.environ["ADVCODE_CACHE"] = old


@pytest.fixture(scope="module")
def generator():
    from models.generator import LLMGenerator

    return LLMGenerator("tiny", "cpu")


@pytest.fixture(scope="module")
def discriminator():
    from models.discriminator import LLMDiscriminator

    return LLMDiscriminator("tiny", "cpu")


PROMPTS = ["Problem:\nAdd two numbers.\n\n### Stage 1: Informal Reasoning\n", "Reverse a list."]
ANSWERS = ["Add them with +.", "Use slicing."]


@pytest.fixture(scope="module")
def trained_generator():
    """A tiny generator after a short SFT run: it now ends its answers with EOS."""
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    torch.manual_seed(0)
    opt = torch.optim.AdamW(gen.trainable_parameters(), lr=3e-3)
    for _ in range(40):
        loss = gen.sft_loss(PROMPTS, ANSWERS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gen


def naive_logps(lm, prompt_ids, prompt_mask, completion_ids, completion_mask, i, model=None):
    """Log-probs of row i's completion, one unpadded sequence at a time."""
    prompt = prompt_ids[i][prompt_mask[i].bool()]
    completion = completion_ids[i][completion_mask[i].bool()]
    ids = torch.cat([prompt, completion]).unsqueeze(0)
    with torch.no_grad():
        logits = (model or lm.model)(input_ids=ids).logits[0].float()  # (T, V)
    logps = logits[:-1].log_softmax(-1)[len(prompt) - 1:]  # predicts completion tokens
    return logps.gather(-1, completion.unsqueeze(-1)).squeeze(-1)


def make_model_dir(path, arch: str, chat_template: str | None = None) -> str:
    """A small random model of `arch` with the tiny tokenizer, saved like a hub model."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    from models.tiny import VOCAB_SIZE, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    if chat_template:
        tokenizer.chat_template = chat_template
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    common = dict(vocab_size=VOCAB_SIZE, num_hidden_layers=2, num_attention_heads=4, **ids)
    config = {
        "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2,
                                     max_position_embeddings=256, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2,
                                     max_position_embeddings=256, **common),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=VOCAB_SIZE, **ids),
        "gpt_neox": lambda: GPTNeoXConfig(hidden_size=32, intermediate_size=64, max_position_embeddings=256, **common),
    }[arch]()
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    out = os.path.join(str(path), arch)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- tiny


def test_tiny_builds_and_loads_like_a_hub_model(tiny_cache):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.tiny import TOKENIZER_FILE, resolve_model_path

    assert resolve_model_path("gpt2") == "gpt2"
    path = resolve_model_path("tiny")
    assert path.startswith(str(tiny_cache)) and os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_model_path("tiny") == path  # built once
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size) == (128, 4, 512, 4096)
    assert c.tie_word_embeddings and c.max_position_embeddings == 1024
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id is not None
    assert not tokenizer.chat_template
    # AutoTokenizer must encode exactly as the committed tokenizer file does.
    text = open(__file__).read()[:3000] + " café 12345 \t\n x"
    assert tokenizer(text)["input_ids"] == Tokenizer.from_file(TOKENIZER_FILE).encode(text).ids
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tiny_sizes_build_their_shape_and_bad_names_are_one_error(tmp_path, monkeypatch):
    from transformers import AutoConfig

    from models.errors import UserError
    from models.tiny import build_tiny, resolve_model_path, tiny_config
    from training.runtime.loading import resolve_model

    path = build_tiny(str(tmp_path), name="tiny-192x2")
    c = AutoConfig.from_pretrained(path)
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (192, 2, 768)
    assert (c.num_attention_heads, c.num_key_value_heads) == (6, 3)
    assert tiny_config("tiny-128x4") == tiny_config("tiny")  # "tiny" is the 128x4 of the same recipe
    assert build_tiny(str(tmp_path), name="tiny-128x4") == build_tiny(str(tmp_path))  # built once, for both names
    assert resolve_model("tiny-256x4") == "tiny-256x4"
    monkeypatch.chdir(tmp_path)
    os.mkdir("tiny-local")
    assert resolve_model_path("tiny-local") == "tiny-local"  # a directory by that name is a directory, not a size
    for bad in ("tiny-100x4", "tiny-256", "tiny-256x0", "tiny-x4"):
        with pytest.raises(UserError, match="tiny-WIDTHxLAYERS|multiple of 64"):
            resolve_model(bad)


def test_tiny_is_deterministic_by_seed(tmp_path):
    from safetensors.torch import load_file

    from models.tiny import build_tiny

    a = load_file(os.path.join(build_tiny(str(tmp_path / "a")), "model.safetensors"))
    b = load_file(os.path.join(build_tiny(str(tmp_path / "b")), "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(name.startswith(".tiny-tmp-") for name in os.listdir(tmp_path / "a"))  # no temp dir left


def test_tokenizer_learns_the_corpus_its_caller_gives(tmp_path):
    from tokenizers import Tokenizer

    from models.tiny import SPECIAL_TOKENS, VOCAB_SIZE, train_tokenizer

    texts = ["def zanzibar_total(xs):\n    return sum(xs)\n"] * 50 + ["assert zanzibar_total([1, 2]) == 3\n"] * 50
    out = tmp_path / "tokenizer.json"
    summary = train_tokenizer(texts, str(out))
    tokenizer = Tokenizer.from_file(str(out))
    assert summary["vocab_size"] == tokenizer.get_vocab_size() <= VOCAB_SIZE
    assert summary["chars"] == sum(map(len, texts)) and summary["chars_per_token"] > 1
    assert all(tokenizer.token_to_id(t) is not None for t in SPECIAL_TOKENS)
    assert len(tokenizer.encode(" zanzibar").ids) == 1  # a word the corpus repeats is one token
    assert tokenizer.encode("12").tokens == ["1", "2"]  # digits stay one by one


# --------------------------------------------------------------------------- generator


def test_generate_stage_output_returns_str_or_list(generator):
    from reasoning.stages import get_stage

    template = get_stage(1).generator_prompt_template
    one = generator.generate_stage_output("Add two numbers.", [], 1, template, max_new_tokens=8)
    many = generator.generate_stage_output("Add two numbers.", [], 1, template, num_samples=3, max_new_tokens=8)
    assert isinstance(one, str)
    assert isinstance(many, list) and len(many) == 3 and all(isinstance(t, str) for t in many)
    greedy = [generator.generate_stage_output("Add.", ["a"], 2, None, temperature=0, max_new_tokens=8) for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_sft_loss_decreases_and_parameters_change():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    before = {k: v.clone() for k, v in gen.model.state_dict().items()}
    opt = torch.optim.AdamW(gen.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = gen.sft_loss(PROMPTS[:1], ANSWERS[:1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    changed = [k for k, v in gen.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)


def test_auto_dtype_is_mixed_precision_on_cuda_and_fp32_on_cpu():
    from models.base import compute_dtype, resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    # auto on CUDA: fp32 weights (AdamW keeps full-precision state), bf16 matrix multiplies
    assert resolve_dtype("auto") == torch.float32 and compute_dtype("auto", cuda) == torch.bfloat16
    assert resolve_dtype(None) == torch.float32 and compute_dtype(None, cpu) is None
    # an explicit dtype is used as it is, with no autocast on top
    assert resolve_dtype("bfloat16") == torch.bfloat16 and compute_dtype("bfloat16", cuda) is None
    assert compute_dtype(torch.float32, cuda) is None


def test_autocast_runs_forward_in_bf16_and_keeps_fp32_weights_and_grads():
    # CPU autocast stands in for CUDA's: the same wrapper code path
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu")
    torch.manual_seed(0)
    full = gen.sft_loss(PROMPTS, ANSWERS).item()
    seen = []
    hook = gen.base_model.lm_head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    gen.compute_dtype = torch.bfloat16
    loss = gen.sft_loss(PROMPTS, ANSWERS)
    loss.backward()
    hook.remove()
    assert seen == [torch.bfloat16]
    assert loss.dtype == torch.float32 and loss.item() != full and abs(loss.item() - full) < 0.05 * full
    grads = [p.grad for p in gen.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in gen.model.parameters())
    out = gen.sample(PROMPTS, num_samples=2, max_new_tokens=4, temperature=1.0)
    assert out.completion_ids.shape[0] == 4
    disc = LLMDiscriminator("tiny", "cpu")
    disc.compute_dtype = torch.bfloat16
    p = disc.score("Add two numbers.", [], 1, "Use +.")
    assert 0.0 <= p <= 1.0


def test_sft_loss_counts_completion_tokens_only(generator):
    # Changing the prompt changes the loss only through the conditioning; the
    # loss equals the mean negative log-prob of the completion tokens (+ EOS).
    p_ids, p_mask, c_ids, c_mask = generator.encode_completions(PROMPTS, ANSWERS)
    assert (c_ids[c_mask.bool()] == generator.tokenizer.eos_token_id).sum() == len(ANSWERS)
    with torch.no_grad():
        loss = generator.sft_loss(PROMPTS, ANSWERS)
        expected = -torch.cat([naive_logps(generator, p_ids, p_mask, c_ids, c_mask, i) for i in range(2)]).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_sample_shapes_masks_and_eos(trained_generator):
    gen = trained_generator
    G = 4
    rollout = gen.sample(PROMPTS, num_samples=G, max_new_tokens=24, temperature=1.0)
    N = len(PROMPTS) * G
    assert rollout.prompt_ids.shape[0] == N and rollout.prompt_mask.shape == rollout.prompt_ids.shape
    assert rollout.completion_ids.shape == rollout.completion_mask.shape and rollout.completion_ids.shape[0] == N
    assert rollout.completion_ids.shape[1] <= 24 and len(rollout.texts) == N and len(rollout.prompts) == N
    assert rollout.prompts == [p for p in PROMPTS for _ in range(G)]
    eos, pad = gen.tokenizer.eos_token_id, gen.tokenizer.pad_token_id
    assert rollout.finished.any(), "the SFT-trained model should end some answers with EOS"
    for ids, mask, done in zip(rollout.completion_ids, rollout.completion_mask, rollout.finished):
        n = int(mask.sum())
        assert torch.all(mask[:n] == 1) and torch.all(mask[n:] == 0)  # ones, then zeros
        if done:
            assert ids[n - 1] == eos and not (ids[: n - 1] == eos).any()  # mask ends at the first EOS
            assert torch.all(ids[n:] == pad)
        else:
            assert n == ids.numel()
    # Left padding: every prompt ends in the last column.
    assert torch.all(rollout.prompt_mask[:, -1] == 1)
    assert rollout.prompt_mask[0].sum() > rollout.prompt_mask[G].sum()  # prompt 0 is the longer one


def test_sample_is_prompt_major(trained_generator):
    gen = trained_generator
    G = 3
    batched = gen.sample(PROMPTS, num_samples=G, max_new_tokens=12, temperature=0)
    for i, prompt in enumerate(PROMPTS):
        alone = gen.sample([prompt], num_samples=1, max_new_tokens=12, temperature=0).texts[0]
        assert batched.texts[i * G:(i + 1) * G] == [alone] * G
    assert batched.texts[0] != batched.texts[G]


def test_per_token_logps_match_naive_computation(trained_generator):
    gen = trained_generator
    r = gen.sample(PROMPTS, num_samples=2, max_new_tokens=16, temperature=1.0)
    logps = gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    assert logps.shape == r.completion_ids.shape and logps.requires_grad
    for i in range(len(r)):
        n = int(r.completion_mask[i].sum())
        expected = naive_logps(gen, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, i)
        assert torch.allclose(logps[i, :n], expected, atol=1e-4)
        assert torch.all(logps[i, n:] == 0)
    hot = gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, temperature=2.0)
    assert not torch.allclose(hot, logps)


def test_entropies_are_those_of_the_sampling_distribution(trained_generator):
    gen = trained_generator
    r = gen.sample(PROMPTS[:2], num_samples=2, max_new_tokens=10, temperature=1.0)
    for T in (1.0, 0.7):
        logps, entropy = gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                             temperature=T, with_entropy=True)
        assert torch.equal(logps, gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                                      temperature=T))
        assert not entropy.requires_grad
        for i in range(len(r)):
            n = int(r.completion_mask[i].sum())
            prompt = r.prompt_ids[i][r.prompt_mask[i].bool()]
            ids = torch.cat([prompt, r.completion_ids[i][:n]]).unsqueeze(0)
            with torch.no_grad():
                logits = gen.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / T  # (n, V)
            expected = torch.distributions.Categorical(logits=logits).entropy()
            assert torch.allclose(entropy[i, :n], expected, atol=1e-4)
            assert torch.all(entropy[i, n:] == 0)


def test_reference_model_is_frozen_copy(trained_generator):
    gen = trained_generator
    ref = gen.make_reference_model()
    assert ref.model is not gen.model and not ref.model.training
    assert not any(p.requires_grad for p in ref.model.parameters())
    p_ids, p_mask, c_ids, c_mask = gen.encode_completions(PROMPTS, ANSWERS)
    ref_before = gen.per_token_logps(p_ids, p_mask, c_ids, c_mask, model=ref)
    assert not ref_before.requires_grad
    assert torch.allclose(ref_before, gen.per_token_logps(p_ids, p_mask, c_ids, c_mask).detach())
    with torch.no_grad():
        for p in gen.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert torch.equal(ref_before, gen.per_token_logps(p_ids, p_mask, c_ids, c_mask, model=ref))
    assert not torch.allclose(ref_before, gen.per_token_logps(p_ids, p_mask, c_ids, c_mask).detach())


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, trained_generator):
    from models.generator import LLMGenerator

    gen = trained_generator
    ckpt = {**gen.checkpoint_info(), "model_state_dict": gen.model_state_dict(), "stage_id": 1}
    assert ckpt["model_name_or_path"] == "tiny" and ckpt["architecture"] == "Qwen2ForCausalLM"
    assert ckpt["model_config"]["hidden_size"] == 128 and ckpt["use_lora"] is False
    torch.save(ckpt, tmp_path / "generator.pt")
    loaded = torch.load(tmp_path / "generator.pt", map_location="cpu", weights_only=True)
    restored = LLMGenerator.from_checkpoint(loaded, device="cpu")
    p_ids, p_mask, c_ids, c_mask = gen.encode_completions(PROMPTS, ANSWERS)
    with torch.no_grad():
        assert torch.equal(
            gen.per_token_logps(p_ids, p_mask, c_ids, c_mask), restored.per_token_logps(p_ids, p_mask, c_ids, c_mask)
        )
    # The contract users rely on: a plain load_state_dict into generator.model.
    fresh = LLMGenerator("tiny", "cpu")
    fresh.model.load_state_dict(loaded["model_state_dict"])


def test_architecture_mismatch_names_both(tmp_path, generator):
    from models.generator import LLMGenerator

    other = LLMGenerator(make_model_dir(tmp_path, "llama"), "cpu")
    with pytest.raises(UserError) as err:
        other.load_model_state(generator.model_state_dict(), checkpoint_info=generator.checkpoint_info())
    message = str(err.value)
    assert message.startswith("Model architecture mismatch")
    assert "Qwen2ForCausalLM (hidden 128" in message and "LlamaForCausalLM (hidden 32" in message
    with pytest.raises(UserError, match="Model architecture mismatch"):
        other.load_model_state(generator.model_state_dict())  # without info: described from the tensors


def test_user_errors_for_device_and_missing_model(tmp_path):
    from models.generator import LLMGenerator

    with pytest.raises(UserError, match="could not load model"):
        LLMGenerator(str(tmp_path / "no-such-model"), "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            LLMGenerator("tiny", "cuda")
    assert LLMGenerator("tiny", "auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- discriminator


def test_score_in_unit_interval_and_head_gets_gradients(discriminator):
    d = discriminator
    p = d.score("Add two numbers.", [], 1, "Use +.")
    assert 0.0 <= p <= 1.0
    items = [("Add two numbers.", [], 1, "Use +."), ("Reverse a list.", ["Slice it."], 2, "Steps: 1. slice")]
    logits = d.score_batch(items, grad=True)
    assert logits.shape == (2,) and logits.requires_grad
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0]))
    d.model.zero_grad()
    d.score_head.zero_grad()
    loss.backward()
    assert d.score_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.model.parameters())
    assert not d.score_batch(items).requires_grad
    # Batched scores equal one-at-a-time scores (padding does not leak into the score).
    one_by_one = torch.stack([d.score_batch([item])[0] for item in items])
    assert torch.allclose(d.score_batch(items), one_by_one, atol=1e-5)


def test_generate_tests_drops_malformed_asserts(discriminator, monkeypatch):
    from models.base import Rollout

    d = discriminator
    text = (
        "assert add(1, 2) == 3\n"
        "assert add(1,\n"  # syntax error
        "print(add(1, 2))\n"  # not an assert
        "assert sub(1, 2) == -1\n"  # wrong function
        "assert add(1, 2) == 3\n"  # duplicate
        "assert add(2, 2) == 4\n"
        "assert add(0, 0) == 0\n"
    )
    seen = {}

    def fake_sample_tests(prompts, num_samples=1, **kwargs):
        seen["prompts"] = prompts
        return Rollout(*(torch.zeros(1, 1),) * 4, texts=[text], prompts=prompts)

    monkeypatch.setattr(d, "sample_tests", fake_sample_tests)
    tests = d.generate_tests("Add two numbers.", "add", code="def add(a, b): return a + b", num_tests=2)
    assert tests == ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    assert d.last_dropped_tests == 4  # three malformed lines and the duplicate
    assert "def add(a, b)" in seen["prompts"][0] and "add" in seen["prompts"][0]


@pytest.mark.parametrize("temperature, samples", [(0.7, 3), (0.0, 1)])
def test_generate_tests_merges_the_distinct_tests_of_several_samples(discriminator, monkeypatch, temperature, samples):
    from models.base import Rollout

    d = discriminator
    texts = ["assert add(1, 2) == 3\n", "assert add(1, 2) == 3\nassert add(0, 0) == 0\n", "oops\nassert add(2, 2) == 4\n"]
    asked = []

    def fake_sample_tests(prompts, num_samples=1, **kwargs):
        asked.append(num_samples)
        return Rollout(*(torch.zeros(num_samples, 1),) * 4, texts=texts[:num_samples], prompts=prompts * num_samples)

    monkeypatch.setattr(d, "sample_tests", fake_sample_tests)
    tests = d.generate_tests("Add two numbers.", "add", num_tests=3, temperature=temperature)
    assert asked == [samples]  # one completion per test wanted when sampling; greedy ones would all be equal
    expected = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(2, 2) == 4"]
    assert tests == expected[: 1 if samples == 1 else 3]
    assert d.last_dropped_tests == (1 if samples == 3 else 0)


@pytest.mark.parametrize("agreement, expected, disputed", [
    (True, ["assert f(2) == 4"], 3),
    (False, ["assert f(0) == 1", "assert f(2) == 4", "assert f(0) == 2", "assert f(0) == 3"], 0),
])
def test_generate_tests_keeps_only_results_its_samples_agree_on(discriminator, monkeypatch, agreement, expected, disputed):
    from models.base import Rollout

    d = discriminator
    texts = [f"assert f(0) == {i + 1}\nassert f(2) == 4\n" for i in range(3)]  # three guesses at f(0)
    monkeypatch.setattr(d, "sample_tests", lambda prompts, num_samples=1, **kwargs: Rollout(
        *(torch.zeros(num_samples, 1),) * 4, texts=texts[:num_samples], prompts=prompts * num_samples))
    assert d.generate_tests("Add one.", "f", num_tests=5, temperature=0.7, samples=3, agreement=agreement) == expected
    assert d.last_disputed_tests == disputed


def test_generate_tests_real_sampling_returns_valid_asserts(discriminator):
    from reasoning.stages import is_assert_on

    tests = discriminator.generate_tests("Add two numbers.", "add", num_tests=3, max_new_tokens=16)
    assert len(tests) <= 3 and all(is_assert_on(t, "add") for t in tests)
    assert discriminator.last_dropped_tests >= 0
    rollout = discriminator.sample_tests(["Problem:\nAdd.\n\n### Unit tests for add\n"], num_samples=2, max_new_tokens=8)
    assert rollout.completion_ids.shape[0] == 2
    logps = discriminator.per_token_logps(rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                          rollout.completion_mask)
    assert logps.shape == rollout.completion_ids.shape and torch.isfinite(logps).all()


def test_discriminator_checkpoint_round_trip(tmp_path, discriminator):
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    d = discriminator
    with torch.no_grad():
        d.score_head.weight.add_(0.1)
    state = d.model_state_dict()
    assert {"score_head.weight", "score_head.bias"} <= set(state)
    torch.save({**d.checkpoint_info(), "model_state_dict": state}, tmp_path / "discriminator.pt")
    ckpt = torch.load(tmp_path / "discriminator.pt", weights_only=True)
    restored = LLMDiscriminator.from_checkpoint(ckpt, device="cpu")
    items = [("Add two numbers.", [], 1, "Use +.")]
    assert torch.equal(d.score_batch(items), restored.score_batch(items))
    gen = LLMGenerator("tiny", "cpu")
    with pytest.raises(UserError, match="no scoring head"):
        restored.load_model_state(gen.model_state_dict())


# --------------------------------------------------------------------------- other architectures


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_other_architectures_work_through_both_classes(tmp_path, arch):
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    path = make_model_dir(tmp_path, arch)
    gen = LLMGenerator(path, "cpu")
    r = gen.sample(PROMPTS, num_samples=2, max_new_tokens=6, temperature=1.0)
    assert r.completion_ids.shape[0] == 4 and len(r.texts) == 4
    logps = gen.per_token_logps(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    for i in (0, 2):  # a long and a short (left-padded) prompt: positions must not shift
        n = int(r.completion_mask[i].sum())
        expected = naive_logps(gen, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, i)
        assert torch.allclose(logps[i, :n], expected, atol=1e-4)
    assert isinstance(gen.generate_stage_output("Add.", [], 1, None, max_new_tokens=4), str)
    gen.sft_loss(PROMPTS, ANSWERS).backward()
    d = LLMDiscriminator(path, "cpu")
    items = [("Add.", [], 1, "Use +."), ("Reverse a list.", ["Slice."], 2, "1. slice")]
    probs = torch.sigmoid(d.score_batch(items))
    assert probs.shape == (2,) and torch.all((probs >= 0) & (probs <= 1))
    one_by_one = torch.stack([d.score_batch([item])[0] for item in items])
    assert torch.allclose(d.score_batch(items), one_by_one, atol=1e-5)
    restored = LLMGenerator.from_checkpoint({**gen.checkpoint_info(), "model_state_dict": gen.model_state_dict()})
    assert type(restored.model).__name__ == type(gen.model).__name__


def test_chat_template_is_applied(tmp_path):
    from models.generator import LLMGenerator

    template = (
        "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    gen = LLMGenerator(make_model_dir(tmp_path, "qwen2", chat_template=template), "cpu")
    assert gen.format_prompt("Add.") == "<|user|>Add.\n<|assistant|>\n"
    r = gen.sample(["Add."], max_new_tokens=3)
    prompt = gen.tokenizer.decode(r.prompt_ids[0][r.prompt_mask[0].bool()])
    assert prompt == "<|user|>Add.\n<|assistant|>\n"
    p_ids, p_mask, _, _ = gen.encode_completions(["Add."], ["Use +."])
    assert gen.tokenizer.decode(p_ids[0][p_mask[0].bool()]) == prompt


# --------------------------------------------------------------------------- LoRA


def test_lora_state_holds_adapters_only_and_round_trips(tmp_path):
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", use_lora=True, lora_r=4, lora_alpha=8)
    trainable = gen.trainable_parameters()
    assert trainable and sum(p.numel() for p in trainable) < 0.2 * sum(p.numel() for p in gen.model.parameters())
    p_ids, p_mask, c_ids, c_mask = gen.encode_completions(PROMPTS, ANSWERS)
    ref = gen.make_reference_model()
    base_logps = gen.per_token_logps(p_ids, p_mask, c_ids, c_mask).detach()
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(3):
        loss = gen.sft_loss(PROMPTS, ANSWERS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = gen.model_state_dict()
    assert state and all("lora_" in k for k in state)
    info = gen.checkpoint_info()
    assert info["use_lora"] and info["lora"]["r"] == 4
    torch.save({**info, "model_state_dict": state}, tmp_path / "generator.pt")
    restored = LLMGenerator.from_checkpoint(torch.load(tmp_path / "generator.pt", weights_only=True))
    with torch.no_grad():
        trained = gen.per_token_logps(p_ids, p_mask, c_ids, c_mask)
        assert torch.equal(trained, restored.per_token_logps(p_ids, p_mask, c_ids, c_mask))
        # The reference is the base with adapters disabled: unchanged by training.
        assert torch.allclose(gen.per_token_logps(p_ids, p_mask, c_ids, c_mask, model=ref), base_logps, atol=1e-6)
        assert not torch.allclose(trained, base_logps)


def test_sampling_ignores_model_generation_defaults(tmp_path):
    """Samples come from softmax(logits / T), whatever the model's generation_config.json says.

    The RL update divides per_token_logps by the sampling temperature and nothing
    else, so a hidden top_k or repetition penalty would bias every ratio.
    """
    from transformers import GenerationConfig

    from models.generator import LLMGenerator

    path = make_model_dir(tmp_path, "llama")
    GenerationConfig(do_sample=True, top_k=3, top_p=0.5, min_p=0.2, repetition_penalty=1.5, temperature=0.3).save_pretrained(path)
    gen = LLMGenerator(path, "cpu")
    prompt_ids, prompt_mask = gen._encode_prompts(PROMPTS, reserve=8)
    config = gen._generation_config(max_new_tokens=8, temperature=0.7, top_p=1.0, min_new_tokens=0)
    config.return_dict_in_generate, config.output_scores = True, True
    out = gen.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    completion_ids = out.sequences[:, prompt_ids.shape[1]:]
    completion_mask, _ = gen._completion_mask(completion_ids)
    scores = torch.stack(out.scores, dim=1)  # (N, C, V) the processed logits generate sampled from
    sampled = scores.log_softmax(-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        logps = gen.per_token_logps(prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=0.7)
    assert torch.allclose(sampled * completion_mask, logps, atol=1e-4)


def test_gradient_checkpointing_and_offloaded_reference():
    from models.generator import LLMGenerator

    gen = LLMGenerator("tiny", "cpu", gradient_checkpointing=True)
    gen.model.train()
    loss = gen.sft_loss(PROMPTS, ANSWERS)
    loss.backward()
    assert all(p.grad is not None for p in gen.trainable_parameters())
    r = gen.sample(PROMPTS, max_new_tokens=4)  # the KV cache still works while training
    assert gen.model.training and r.completion_ids.shape[1] == 4
    ref = gen.make_reference_model(offload=True)
    p_ids, p_mask, c_ids, c_mask = gen.encode_completions(PROMPTS, ANSWERS)
    assert torch.allclose(gen.per_token_logps(p_ids, p_mask, c_ids, c_mask, model=ref),
                          gen.per_token_logps(p_ids, p_mask, c_ids, c_mask).detach(), atol=1e-5)


def test_long_prompts_are_cut_to_fit_absolute_positions(tmp_path):
    """GPT-2 has 256 learned positions here: longer inputs must be cut, not crash."""
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    path = make_model_dir(tmp_path, "gpt2")
    long_prompt = "word " * 600 + "\n### Stage 1: Informal Reasoning\n"
    gen = LLMGenerator(path, "cpu")
    r = gen.sample([long_prompt, "short"], max_new_tokens=16)
    assert r.prompt_ids.shape[1] + r.completion_ids.shape[1] <= 256
    assert gen.tokenizer.decode(r.prompt_ids[0]).endswith("### Stage 1: Informal Reasoning\n")  # the end survives
    assert torch.isfinite(gen.sft_loss([long_prompt], ["answer"]))
    d = LLMDiscriminator(path, "cpu")
    assert d.score_batch([(long_prompt, [], 1, "output")]).shape == (1,)


def test_lora_discriminator_trains_adapters_and_head(tmp_path):
    from models.discriminator import LLMDiscriminator

    d = LLMDiscriminator("tiny", "cpu", use_lora=True, lora_r=4, lora_alpha=8)
    items = [("Add two numbers.", [], 1, "Use +."), ("Reverse a list.", [], 1, "Slice.")]
    opt = torch.optim.AdamW(d.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(d.score_batch(items, grad=True), torch.tensor([1.0, 0.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = d.model_state_dict()
    assert {"score_head.weight", "score_head.bias"} <= set(state)
    assert all("lora_" in k for k in state if not k.startswith("score_head."))
    torch.save({**d.checkpoint_info(), "model_state_dict": state}, tmp_path / "discriminator.pt")
    restored = LLMDiscriminator.from_checkpoint(torch.load(tmp_path / "discriminator.pt", weights_only=True))
    assert torch.equal(d.score_batch(items), restored.score_batch(items))
