"""LLMGenerator.sample against a bare model.generate: what does the wrapper cost?

    python bench/generation_bench.py                      # tiny model, 8 prompts x 128 new tokens
    python bench/generation_bench.py --json bench.json --repeats 9

Both sides sample the same prompts with the same settings (temperature 1, top-p 1,
no top-k, KV cache) and are forced to produce exactly --new-tokens tokens each
(min_new_tokens = max_new_tokens), so tokens/s compare like for like. The wrapper's
time includes what it adds: chat-template formatting, tokenization, padding, the
completion mask and decoding. Runs alternate (bare, wrapper, bare, ...) so that
drift on a shared machine hits both; the medians are reported, and the ratio is
the median of per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.generator import LLMGenerator  # noqa: E402
from reasoning.stages import build_prompt  # noqa: E402

PROBLEMS = [
    "Write a function add(a, b) that returns the sum of two integers.",
    "Return the list reversed.",
    "Count the vowels in a string s and return the count.",
    "Given a list of integers, return the largest even number, or None if there is none.",
    "Return True when n is prime.",
    "Merge two sorted lists into one sorted list.",
    "Return the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1.",
    "Remove duplicate words from a sentence, keeping the first occurrence of each.",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="hub id, local directory, or tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1, help="samples per prompt (G)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared 2-core box, 2 threads are often "
                             "many times slower under contention, which swamps the comparison")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    gen = LLMGenerator(args.model, args.device)
    prompts = [build_prompt(PROBLEMS[i % len(PROBLEMS)], [], 1) for i in range(args.prompts)]
    N, T = args.prompts * args.samples, args.new_tokens

    # The bare side gets its inputs ready-made: tokenized, padded, repeated.
    prompt_ids, prompt_mask = gen._encode_prompts(prompts, reserve=T)
    prompt_ids = prompt_ids.repeat_interleave(args.samples, dim=0)
    prompt_mask = prompt_mask.repeat_interleave(args.samples, dim=0)
    config = gen._generation_config(max_new_tokens=T, temperature=1.0, top_p=1.0, min_new_tokens=T)
    gen.model.eval()

    def bare():
        out = gen.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
        return out.shape[0] * (out.shape[1] - prompt_ids.shape[1])

    # The wrapper's own work, measured directly: its time outside model.generate.
    # Unlike the ratio of two noisy timings, this does not drift with machine load.
    inner_generate = gen.model.generate
    outside = []

    def timed_generate(*a, **kw):
        start = time.perf_counter()
        out = inner_generate(*a, **kw)
        timed_generate.seconds = time.perf_counter() - start
        return out

    def wrapper():
        gen.model.generate = timed_generate
        start = time.perf_counter()
        try:
            r = gen.sample(prompts, num_samples=args.samples, max_new_tokens=T, temperature=1.0, min_new_tokens=T)
        finally:
            del gen.model.generate  # back to the class's method
        outside.append((time.perf_counter() - start - timed_generate.seconds, time.perf_counter() - start))
        return r.completion_ids.numel()

    def timed(fn):
        start = time.perf_counter()
        tokens = fn()
        seconds = time.perf_counter() - start
        assert tokens == N * T, f"expected {N * T} tokens, got {tokens}"
        return tokens / seconds

    torch.manual_seed(0)
    timed(bare), timed(wrapper)  # warm-up: first calls allocate and dispatch slowly
    bare_tps, wrapper_tps = [], []
    for _ in range(args.repeats):
        bare_tps.append(timed(bare))
        wrapper_tps.append(timed(wrapper))
    result = {
        "model": args.model,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "prompts": args.prompts,
        "samples_per_prompt": args.samples,
        "new_tokens": T,
        "repeats": args.repeats,
        "bare_generate_tok_s": round(statistics.median(bare_tps), 1),
        "wrapper_sample_tok_s": round(statistics.median(wrapper_tps), 1),
        # Per-repeat ratios, then the median: each pair ran back to back.
        "wrapper_over_bare": round(statistics.median(w / b for w, b in zip(wrapper_tps, bare_tps)), 3),
    }
    result["overhead_pct"] = round(100 * (1 / result["wrapper_over_bare"] - 1), 1)
    result["wrapper_outside_generate_ms"] = round(1000 * statistics.median(o for o, _ in outside), 2)
    result["wrapper_outside_generate_pct"] = round(100 * statistics.median(o / t for o, t in outside), 2)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
