"""LLMGenerator.sample against a bare model.generate: what does the wrapper cost, and what does the fast engine gain?

    python bench/generation_bench.py                      # tiny model, 128 new tokens per row
    python bench/generation_bench.py --json bench.json --repeats 9 --rows 8,64 --group 8

Two comparisons, each against a bare `model.generate` given ready-made inputs:

- the wrapper on the generate engine (`generation_engine="generate"`), --prompts
  rows: what the wrapper adds around generate;
- the wrapper on the fast engine (`generation_engine="fast"`, models/fast_sampler.py)
  at each --rows batch size (prompts of about --prompt-tokens tokens, one sample
  each), and, with
  --group G, the largest of them as rows/G prompts x G samples, where the fast
  engine prefills each prompt once; there it is also timed with each prompt's
  cache copied to its G samples against one copy they share
  (`shared_over_copied`);
- the wrapper on the vllm engine (`generation_engine="vllm"`, models/vllm_engine.py)
  at the same cases, when vLLM is importable (`--vllm 0` skips it); its engine is
  built, and the weights pushed, before the timed runs.

Every side samples the same prompts with the same settings (temperature 1, top-p 1,
no top-k, KV cache) and is forced to produce exactly --new-tokens tokens per row
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
from models.vllm_engine import vllm_installed  # noqa: E402
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=200,
                        help="lengthen the fast engine's prompts to about this many tokens, as later stages' prompts "
                             "(the earlier stages included) are; 0: the bare stage-1 prompts")
    parser.add_argument("--rows", default="8,64", help="comma-separated batch sizes for the fast engine's comparison")
    parser.add_argument("--group", type=int, default=8,
                        help="also run the largest --rows as rows/G prompts x G samples (0: don't)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared 2-core box, 2 threads are often "
                             "many times slower under contention, which swamps the comparison")
    parser.add_argument("--vllm", type=int, default=1, help="also time the vllm engine when vLLM is importable (0: don't)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        rows_list = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows takes comma-separated integers, got {args.rows!r}")
    gen = LLMGenerator(args.model, args.device, generation_engine="generate")
    prompts = [build_prompt(PROBLEMS[i % len(PROBLEMS)], [], 1) for i in range(args.prompts)]
    N, T = args.prompts * args.samples, args.new_tokens
    gen.model.eval()
    bare = bare_generate(gen, prompts, args.samples, T)

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
        gen.generation_engine = "generate"
        gen.model.generate = timed_generate
        start = time.perf_counter()
        try:
            r = gen.sample(prompts, num_samples=args.samples, max_new_tokens=T, temperature=1.0, min_new_tokens=T)
        finally:
            del gen.model.generate  # back to the class's method
        outside.append((time.perf_counter() - start - timed_generate.seconds, time.perf_counter() - start))
        return r.completion_ids.numel()

    torch.manual_seed(0)
    bare_tps, wrapper_tps = paired(bare, wrapper, N * T, args.repeats)
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

    cases = [(rows, 1) for rows in rows_list]
    if args.group > 1 and max(rows_list) % args.group == 0:
        cases.append((max(rows_list), args.group))
    engines = ["fast"] + (["vllm"] if args.vllm and vllm_installed() else [])
    for engine in engines:  # each against bare generate, alternated, case by case
        result[f"{engine}_engine"] = []
        for rows, G in cases:
            case_prompts = [long_prompt(gen, i, args.prompt_tokens) for i in range(rows // G)]
            case_bare = bare_generate(gen, case_prompts, G, T)

            def sample(engine=engine, case_prompts=case_prompts, G=G):
                gen.generation_engine = engine
                r = gen.sample(case_prompts, num_samples=G, max_new_tokens=T, temperature=1.0, min_new_tokens=T)
                return r.completion_ids.numel()

            bare_case, engine_case = paired(case_bare, sample, rows * T, args.repeats)
            entry = {
                "rows": rows,
                "prompts": rows // G,
                "samples_per_prompt": G,
                "prompt_tokens": gen._encode_prompts(case_prompts, reserve=T)[0].shape[1],
                "bare_generate_tok_s": round(statistics.median(bare_case), 1),
                f"{engine}_tok_s": round(statistics.median(engine_case), 1),
                f"{engine}_over_bare": round(statistics.median(e / b for e, b in zip(engine_case, bare_case)), 3),
            }
            if engine == "fast" and G > 1:  # the samples attending to one copy of their prompt's cache, or to G copies
                sampler = gen._fast_sampler

                def copied(sample=sample):
                    sampler.share_prefixes = False
                    try:
                        return sample()
                    finally:
                        sampler.share_prefixes = True

                copied_tps, shared_tps = paired(copied, sample, rows * T, args.repeats)
                entry["fast_copied_prefix_tok_s"] = round(statistics.median(copied_tps), 1)
                entry["shared_over_copied"] = round(statistics.median(s / c for s, c in zip(shared_tps, copied_tps)), 3)
            result[f"{engine}_engine"].append(entry)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def long_prompt(gen, i: int, tokens: int) -> str:
    """Problem i's stage-1 prompt, its statement followed by the other problems' until it has about `tokens` tokens."""
    text = PROBLEMS[i % len(PROBLEMS)]
    j = i + 1
    while len(gen._prompt_tokens([build_prompt(text, [], 1)])[0]) < tokens:
        text += " " + PROBLEMS[j % len(PROBLEMS)]
        j += 1
    return build_prompt(text, [], 1)


def bare_generate(gen, prompts: list[str], samples: int, T: int):
    """A call of bare model.generate on ready-made inputs (tokenized, padded, repeated); it returns the token count."""
    prompt_ids, prompt_mask = gen._encode_prompts(prompts, reserve=T)
    prompt_ids = prompt_ids.repeat_interleave(samples, dim=0)  # (N, P)
    prompt_mask = prompt_mask.repeat_interleave(samples, dim=0)
    config = gen._generation_config(max_new_tokens=T, temperature=1.0, top_p=1.0, min_new_tokens=T)

    def bare():
        with torch.no_grad():
            out = gen.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
        return out.shape[0] * (out.shape[1] - prompt_ids.shape[1])

    return bare


def paired(first, second, tokens: int, repeats: int) -> tuple[list[float], list[float]]:
    """Tokens/s of `first` and `second`, alternated `repeats` times after one warm-up call each."""

    def timed(fn):
        start = time.perf_counter()
        got = fn()
        seconds = time.perf_counter() - start
        assert got == tokens, f"expected {tokens} tokens, got {got}"
        return got / seconds

    timed(first), timed(second)  # warm-up: first calls allocate and dispatch slowly
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(first))
        b.append(timed(second))
    return a, b


if __name__ == "__main__":
    sys.exit(main())
