"""The embedded default model, "tiny": built locally, then loaded like any hub model.

No model hub is reachable on the project's machines, so the default config names
"tiny": a 1.6M-parameter Qwen2-style causal LM with a 4,096-token byte-level BPE
tokenizer. `resolve_model_path("tiny")` builds it once into a cache directory
(`$ADVCODE_CACHE`, default `~/.cache/adversarial-code`) and returns that
directory; from then on it is an ordinary Hugging Face model directory, loaded
with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
Nothing else in the project knows it is special.

"tiny-WIDTHxLAYERS" (e.g. "tiny-256x4") names the same recipe at another size:
hidden size WIDTH, LAYERS layers, an MLP 4x as wide, heads of 32 dimensions
and half as many key-value heads; "tiny" is "tiny-128x4".

    python -m models.tiny                     # build (or find) it, print the directory
    python -m models.tiny tiny-256x4          # the same recipe, wider
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
import re
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


HEAD_DIM = 32
_SIZE_NAME = re.compile(r"tiny-([1-9][0-9]*)x([1-9][0-9]*)")


def is_tiny_name(name: str) -> bool:
    """Whether `name` names an embedded model ("tiny" or "tiny-WIDTHxLAYERS"), valid or not."""
    return name == TINY_NAME or name.startswith(TINY_NAME + "-") and "/" not in name and not os.path.exists(name)


def tiny_config(name: str = TINY_NAME) -> dict:
    """The Qwen2 config of the embedded model `name`: "tiny", or "tiny-WIDTHxLAYERS"; UserError otherwise."""
    if name == TINY_NAME:
        return dict(TINY_CONFIG)
    match = _SIZE_NAME.fullmatch(name)
    if match is None:
        raise UserError(f"{name!r} is not an embedded model name; use {TINY_NAME!r} or "
                        f"'{TINY_NAME}-WIDTHxLAYERS', e.g. '{TINY_NAME}-256x4'")
    width, layers = int(match.group(1)), int(match.group(2))
    if width % (2 * HEAD_DIM) or not 64 <= width <= 4096 or layers > 64:
        raise UserError(f"{name}: the width must be a multiple of {2 * HEAD_DIM} from 64 to 4096 "
                        f"and the layers at most 64, got {width}x{layers}")
    heads = width // HEAD_DIM
    return dict(TINY_CONFIG, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=heads // 2)


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("ADVCODE_CACHE") or os.path.join("~", ".cache", "adversarial-code"))


def resolve_model_path(name_or_path: str) -> str:
    """The directory or hub id to load: builds and returns an embedded model for its name, else identity."""
    if not is_tiny_name(name_or_path):
        return name_or_path
    return build_tiny(name=name_or_path)


def _build_key(config: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": config, "seed": INIT_SEED, "special": SPECIAL_TOKENS,
                         "version": _BUILD_VERSION}, sort_keys=True).encode())
    with open(TOKENIZER_FILE, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def build_tiny(root: str | None = None, name: str = TINY_NAME) -> str:
    """Build the embedded model `name` under `root` (default: the cache) unless it exists; return its directory.

    The directory is written under a temporary name and renamed into place, so
    concurrent processes never see a half-written model: the first rename wins
    and the others discard their identical copy.
    """
    if not os.path.isfile(TOKENIZER_FILE):
        raise UserError(f"{TOKENIZER_FILE} is missing; run `python -m training.data.tiny_tokenizer` to create it")
    config = tiny_config(name)
    root = root or cache_dir()
    # Named by the size it builds: "tiny-128x4" finds the directory "tiny" built, and the default keeps its name.
    label = TINY_NAME if config == TINY_CONFIG else name
    final = os.path.join(root, f"{label}-{_build_key(config)}")
    if os.path.isfile(os.path.join(final, "config.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-tmp-", dir=root)
    try:
        _write_tiny(tmp, config)
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


def _write_tiny(path: str, model_config: dict) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_tokenizer()
    if len(tokenizer) > VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer has {len(tokenizer)} tokens, more than the model's {VOCAB_SIZE}")
    config = Qwen2Config(
        **model_config,
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
    parser.add_argument("name", nargs="?", default=TINY_NAME,
                        help=f"{TINY_NAME!r} (default) or '{TINY_NAME}-WIDTHxLAYERS', e.g. '{TINY_NAME}-256x4'")
    args = parser.parse_args(argv)
    try:
        print(build_tiny(name=args.name))
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
