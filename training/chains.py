"""Five-stage chains: each stage generated after the problem and the stages before it.

Used by the trainer (prefixes, look-ahead, evaluation), by inference.py and
by the evaluation script, so that all of them build chains the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reasoning.stages import NUM_STAGES, build_prompt, get_stage


def generate_chains(
    generator,
    problem_texts: list,
    max_new_tokens: list | None = None,
    upto: int = NUM_STAGES,
    start: list | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 64,
) -> list:
    """Stages len(start)+1..upto for each problem text; returns one chain (list of stage texts) each.

    temperature 0 is greedy decoding. `start` gives chains to continue (all of
    the same length); `max_new_tokens` lists the budget per stage (default:
    each stage's own).
    """
    budgets = max_new_tokens or [get_stage(i).max_new_tokens for i in range(1, NUM_STAGES + 1)]
    chains = [list(s) for s in start] if start is not None else [[] for _ in problem_texts]
    if not chains:
        return []
    first = len(chains[0]) + 1
    generator.model.eval()
    for lo in range(0, len(problem_texts), batch_size):
        idx = range(lo, min(lo + batch_size, len(problem_texts)))
        for stage_id in range(first, upto + 1):
            prompts = [build_prompt(problem_texts[i], chains[i], stage_id) for i in idx]
            with torch.no_grad():
                ro = generator.sample(
                    prompts, num_samples=1, max_new_tokens=budgets[stage_id - 1], temperature=temperature, top_p=top_p
                )
            stage = get_stage(stage_id)
            for i, text in zip(idx, ro.texts):
                chains[i].append(stage.extract(text))
    return chains


def sample_chains(generator, problems: list, n: int, temperature: float, max_new_tokens=None,
                  batch_size: int = 64, bar=None) -> list:
    """n five-stage chains per problem: per problem, a list of n chains (lists of 5 stage texts)."""
    per_chunk = max(1, batch_size // n)
    out = []
    for lo in range(0, len(problems), per_chunk):
        chunk = problems[lo : lo + per_chunk]
        texts = [p.prompt for p in chunk for _ in range(n)]
        chains = generate_chains(generator, texts, max_new_tokens, temperature=temperature, batch_size=batch_size)
        out.extend(chains[i * n : (i + 1) * n] for i in range(len(chunk)))
        if bar is not None:
            bar.update(len(chunk))
    return out


@dataclass(frozen=True)
class LabelledChain:
    """A problem, the generator's stages 1-4 for it, and whether the chain's code passed."""

    problem_id: str
    prompt: str
    stages: tuple  # stages 1..4 (texts)
    passed: bool

    def item(self, k: int) -> tuple:
        """The scoring head's input for stage k: (problem, stages 1..k-1, k, stage k)."""
        return (self.prompt, list(self.stages[: k - 1]), k, self.stages[k - 1])


def chain_passed(outcomes: list) -> bool:
    """A chain's label: its code passed every test the reward scored it on (none scored: failed)."""
    return bool(outcomes) and all(outcomes)
