"""The embedded default model, "tiny": built locally, then loaded like any hub model.

No model hub is reachable on the project's machines, so the default config names
"tiny": a 1.6M-parameter Qwen2-style causal LM with a 4,096-token byte-level BPE
tokenizer. `resolve_model_path("tiny")` builds it once into a cache directory
(`$ADVCODE_CACHE`, default `~/.cache/adversarial-code`) and returns that
directory; from then on it is an ordinary Hugging Face model directory, loaded
with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
Nothing else in the project knows it is special.

    python -m models.tiny                     # build (or find) it, print the directory
    python -m training.data.tiny_tokenizer    # retrain models/tiny_tokenizer/tokenizer.json

The tokenizer file is committed; it is trained on the repository's own Python
source plus the bundled curriculum rendered exactly as the training prompts are.
`train_tokenizer` here fixes how (byte-level BPE, the vocabulary, the
pre-tokenizer); the corpus is its caller's, since the curriculum lives in
training/, above this package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

from models.errors import UserError

TINY_NAME = "tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_FILE = os.path.join(ROOT, "models", "tiny_tokenizer", "tokenizer.json")

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]
VOCAB_SIZE = 4096
INIT_SEED = 0
# transformers' Qwen2Tokenizer pre-tokenization regex (GPT-4 style, digits one by one).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# 128/4/512 learned templated problem families fastest on 2 CPU cores
# of the sizes tried: ~7,600 train tok/s, ~910 sample tok/s.
TINY_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    initializer_range=0.02,
    tie_word_embeddings=True,
    use_cache=True,
)
# Bump when the build procedure changes in a way the config and tokenizer hash can't see.
_BUILD_VERSION = 1


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("ADVCODE_CACHE") or os.path.join("~", ".cache", "adversarial-code"))


def resolve_model_path(name_or_path: str) -> str:
    """The directory or hub id to load: builds and returns the tiny model for "tiny", else identity."""
    if name_or_path != TINY_NAME:
        return name_or_path
    return build_tiny()


def _build_key() -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": TINY_CONFIG, "seed": INIT_SEED, "special": SPECIAL_TOKENS,
                         "version": _BUILD_VERSION}, sort_keys=True).encode())
    with open(TOKENIZER_FILE, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def build_tiny(root: str | None = None) -> str:
    """Build the tiny model directory under `root` (default: the cache) unless it exists; return it.

    The directory is written under a temporary name and renamed into place, so
    concurrent processes never see a half-written model: the first rename wins
    and the others discard their identical copy.
    """
    if not os.path.isfile(TOKENIZER_FILE):
        raise UserError(f"{TOKENIZER_FILE} is missing; run `python -m training.data.tiny_tokenizer` to create it")
    root = root or cache_dir()
    final = os.path.join(root, f"tiny-{_build_key()}")
    if os.path.isfile(os.path.join(final, "config.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-tmp-", dir=root)
    try:
        _write_tiny(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its copy first (the target exists and is not empty).
            if not os.path.isfile(os.path.join(final, "config.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_tokenizer():
    """The committed tokenizer wrapped as a `PreTrainedTokenizerFast` (eos and pad set, no chat template)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=TOKENIZER_FILE,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    return tokenizer


def _write_tiny(path: str) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_tokenizer()
    if len(tokenizer) > VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer has {len(tokenizer)} tokens, more than the model's {VOCAB_SIZE}")
    config = Qwen2Config(
        **TINY_CONFIG,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng: the build must not move the caller's global RNG, and must not depend on it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# --------------------------------------------------------------------------- tokenizer training


def train_tokenizer(texts: list[str], out_file: str = TOKENIZER_FILE) -> dict:
    """Train the byte-level BPE on `texts`; write `out_file`; return its size and how well it compresses."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # The same normalizer and pre-tokenizer as transformers' Qwen2Tokenizer, which
    # AutoTokenizer substitutes for any model_type "qwen2" directory: training with
    # them makes the committed file and the loaded tokenizer encode identically.
    # The regex also splits digits one by one, so a constant copied from the problem
    # into the code spells the same way wherever it appears.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    tokenizer.save(out_file)
    chars = sum(len(t) for t in texts)
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
    return {
        "file": os.path.relpath(out_file, ROOT),
        "vocab_size": tokenizer.get_vocab_size(),
        "chars": chars,
        "chars_per_token": round(chars / max(tokens, 1), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.tiny",
        description="Build the embedded tiny model (or find it in the cache) and print its directory. "
        "`python -m training.data.tiny_tokenizer` retrains its tokenizer."
    )
    parser.parse_args(argv)
    print(build_tiny())
    return 0


if __name__ == "__main__":
    sys.exit(main())
