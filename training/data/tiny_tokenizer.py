"""Retrain the embedded tiny model's tokenizer on this repository's own text.

    python -m training.data.tiny_tokenizer            # rewrite models/tiny_tokenizer/tokenizer.json
    python -m training.data.tiny_tokenizer --extra a.txt  # and some text files besides

The corpus is every Python file of the repository plus each curriculum problem
rendered exactly as the warm-up and the test writer see it, so the vocabulary
spends its merges on what the model will read. `models.tiny.train_tokenizer`
fixes the tokenizer itself. The tiny model's cache key hashes the tokenizer
file, so a retrained tokenizer means a new model on next use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from models.tiny import ROOT, TOKENIZER_FILE, train_tokenizer
from reasoning.stages import NUM_STAGES, build_prompt, build_test_prompt

_SKIP_DIRS = {"__pycache__", "checkpoints", "venv", "node_modules", "shared"}


def repo_python_files(root: str = ROOT) -> list[str]:
    """Every .py file under `root`, in a fixed order, leaving out hidden, cache and output directories."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return found


def curriculum_texts() -> list[str]:
    """Every curriculum problem rendered as the warm-up sees it: each stage's prompt plus its gold text."""
    from training.data.curriculum import load_curriculum

    texts = []
    for problem in load_curriculum(split="all"):
        gold = list(problem.gold_stages or [])
        chain = gold + [problem.reference_solution] if len(gold) == NUM_STAGES - 1 else None
        if chain is None:
            texts.append(build_prompt(problem.prompt, [], 1) + problem.reference_solution)
        else:
            for k in range(1, NUM_STAGES + 1):
                texts.append(build_prompt(problem.prompt, chain[: k - 1], k) + chain[k - 1])
        entry_point = getattr(problem, "entry_point", None)
        tests = "\n".join(problem.tests or [])
        if entry_point:
            texts.append(build_test_prompt(problem.prompt, entry_point) + tests)
        else:
            texts.append(tests)
    return texts


def retrain(out_file: str = TOKENIZER_FILE, extra_files: list[str] = ()) -> dict:
    """Train the tokenizer on the repository's corpus (plus `extra_files`); write `out_file`; return a summary."""
    texts = []
    for path in list(repo_python_files()) + list(extra_files):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    n_source = len(texts)
    curriculum = curriculum_texts()
    summary = train_tokenizer(texts + curriculum, out_file)
    return {
        "file": summary["file"],
        "vocab_size": summary["vocab_size"],
        "source_files": n_source,
        "curriculum": f"{len(curriculum)} rendered curriculum texts",
        "chars": summary["chars"],
        "chars_per_token": summary["chars_per_token"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.tiny_tokenizer",
        description="Retrain models/tiny_tokenizer/tokenizer.json on the repository's source and the curriculum.",
    )
    parser.add_argument("--extra", nargs="*", default=[], help="extra text files for tokenizer training")
    args = parser.parse_args(argv)
    print(json.dumps(retrain(extra_files=args.extra), indent=2))
    print("the tiny model is rebuilt on next use (its cache key includes the tokenizer file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
