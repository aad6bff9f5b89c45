"""Solve one programming problem with a trained checkpoint (or any Hugging Face model), in five stages.

    python inference.py --problem "Implement a function that reverses a string"
    python inference.py --checkpoint checkpoints/final --problem "..." --device cpu
    python inference.py --problem "..." --generate-tests --num-tests 5     # the discriminator tests the code
    python inference.py --problem "..." --num-samples 8                    # best of 8 by CodeT dual agreement
    python inference.py --problem "..." --generate-tests --output results.json
    python inference.py --problem "..." --generate-tests --test-writer-input code   # the writer reads the code first
    python inference.py --model Qwen/Qwen2.5-Coder-1.5B-Instruct --problem "..."   # any HF model, untrained

Prints each stage as `Stage N: <Name>`, a line of 60 dashes, and the stage
text. Loading messages go to stderr, so stdout holds only the answer.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_CHECKPOINT = "checkpoints/best"
DEFAULT_PROBLEM = "Implement a function `reverse_string(s)` that returns the string s reversed."
RULE = "-" * 60


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Five-stage answer to one programming problem from a checkpoint or a Hugging Face model.")
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint directory (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--model", metavar="NAME_OR_DIR",
                        help="a Hugging Face model directory or hub id to answer with instead of a checkpoint (no training)")
    parser.add_argument("--test-model", metavar="NAME_OR_DIR",
                        help="with --model: the model that writes the tests (default: --model itself)")
    parser.add_argument("--problem", default=DEFAULT_PROBLEM, help="the problem statement (default: an example)")
    parser.add_argument("--entry-point", help="name of the function to test (default: found in the problem or the code)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: 0, greedy; 0.8 with --num-samples > 1)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="token budget of every stage and of each test-writer sample (default: the checkpoint's max_new_tokens and test_max_new_tokens; with --model, the training config's defaults)")
    parser.add_argument("--generate-tests", action="store_true", help="the discriminator writes tests; run them on the final code")
    parser.add_argument("--num-tests", type=int, default=5, help="tests to write with --generate-tests or --num-samples (default 5)")
    parser.add_argument("--test-writer-input", choices=("problem", "code"), default=None,
                        help="what the test writer reads: the problem, or the problem and the generated code "
                             "(each sample's, pooled, with --num-samples; default: what the checkpoint's writer "
                             "trained on, test_writer_input)")
    parser.add_argument("--no-test-agreement", action="store_true",
                        help="keep every distinct test of the writer's samples, also the results they disagree on "
                             "(default: a call whose samples assert different results keeps a majority result, or none)")
    parser.add_argument("--test-values", choices=("writer", "samples"), default="writer",
                        help="the written tests' expected values: the writer's own, or with --num-samples > 1 the "
                             "value most samples' code returns for each call (a call without a majority is dropped)")
    parser.add_argument("--num-samples", type=int, default=1,
                        help="sample N chains and keep the one CodeT dual agreement ranks first (default 1)")
    parser.add_argument("--generation-engine", choices=("fast", "generate", "vllm"), default=None,
                        help="what samples: the fast decode loop, model.generate, or vLLM (GPU; pip install -r requirements-vllm.txt) "
                             "(default: the checkpoint's run's; fast with --model)")
    parser.add_argument("--output", help="also write the answer (and test results) to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    from training.runtime.cli import run_cli

    return run_cli(run, args)


def run(args) -> int:
    from reasoning.stages import NUM_STAGES, get_stage
    from training.runtime.build import build_sandbox, quiet_model_loading
    from training.chains import generate_chains
    from training.runtime.cli import check_flags, write_atomically
    from training.errors import UserError
    from training.runtime.loading import load_model_players, load_players, players_source, use_engine
    from training.evaluation.ranking import codet_rank, infer_entry_point, pass_matrix, voted_tests

    # ---------------------------------------------------------------- arguments
    problem = (args.problem or "").strip()
    if not problem:
        raise UserError('the problem is empty; pass its statement with --problem "..."')
    check_flags(("count", "--num-samples", args.num_samples), ("count", "--num-tests", args.num_tests),
                ("budget", "--max-new-tokens", args.max_new_tokens))
    if args.test_values == "samples" and args.num_samples < 2:
        raise UserError("--test-values samples needs --num-samples 2 or more: the samples vote on each call's value")
    if args.entry_point is not None and not args.entry_point.isidentifier():
        raise UserError(f"--entry-point must be a Python function name, got {args.entry_point!r}")
    temperature = args.temperature if args.temperature is not None else (0.8 if args.num_samples > 1 else 0.0)
    check_flags(("temperature", "--temperature", temperature))
    wants_tests = args.generate_tests or args.num_samples > 1
    checkpoint = players_source(args.checkpoint, args.model, args.test_model, DEFAULT_CHECKPOINT)

    # ---------------------------------------------------------------- players
    print(f"loading {args.model or checkpoint} ...", file=sys.stderr)
    quiet_model_loading()
    if args.model:
        generator, discriminator, config, metrics = load_model_players(
            args.model, args.device, test_model=args.test_model, discriminator=wants_tests)
    else:
        generator, discriminator, config, metrics = load_players(checkpoint, args.device, discriminator=wants_tests)
    use_engine(args.generation_engine, generator, discriminator)
    budgets = [args.max_new_tokens] * NUM_STAGES if args.max_new_tokens else list(config.max_new_tokens)
    writer_input = args.test_writer_input or config.test_writer_input

    # ---------------------------------------------------------------- five stages, N times
    chains = generate_chains(generator, [problem] * args.num_samples, budgets, temperature=temperature)
    codes = [chain[-1] for chain in chains]

    # ---------------------------------------------------------------- tests and ranking
    entry_point = args.entry_point or infer_entry_point(problem, codes)
    tests, matrix, pick, note = [], [[] for _ in codes], None, None
    if wants_tests:
        if entry_point is None:
            note = "no tests: the function name is not in the problem or the code; pass --entry-point NAME"
        else:
            disputed = 0
            for code in (codes if writer_input == "code" else [None]):  # the code each test set was written for
                written = discriminator.generate_tests(
                    problem, entry_point, code=code, num_tests=args.num_tests,
                    max_new_tokens=args.max_new_tokens or config.test_max_new_tokens, agreement=not args.no_test_agreement,
                )
                tests += [t for t in written if t not in tests]
                disputed += discriminator.last_disputed_tests
            if not tests and disputed:
                note = (f"no tests: the discriminator's samples disagreed on every result for {entry_point}; "
                        "--no-test-agreement keeps them")
            elif not tests:
                note = f"the discriminator wrote no usable test for {entry_point}"
            else:
                with build_sandbox(config) as sandbox:
                    if args.test_values == "samples":
                        written = len(tests)
                        tests = list(dict.fromkeys(t for t in voted_tests(sandbox, codes, tests, entry_point) if t))
                        note = (f"expected values voted by the {len(codes)} samples: {len(tests)} of {written} "
                                "calls had a majority")
                    matrix = pass_matrix(sandbox, codes, tests, entry_point) if tests else [[] for _ in codes]
    if args.num_samples > 1:
        pick = codet_rank(matrix)
    winner = pick.index if pick else 0
    chain = chains[winner]

    # ---------------------------------------------------------------- report
    for stage_id, text in enumerate(chain, start=1):
        print(f"Stage {stage_id}: {get_stage(stage_id).name}")
        print(RULE)
        print(text)
        print()
    if pick is not None:
        print(f"Picked sample {winner} of {args.num_samples} by CodeT dual agreement: {pick.explain()}.")
    results = [{"test": t, "passed": ok} for t, ok in zip(tests, matrix[winner])]
    summary = {"passed": sum(r["passed"] for r in results), "total": len(results)}
    if args.generate_tests:
        print(f"Tests for {entry_point}:" if entry_point else "Tests:")
        for r in results:
            print(f"{'PASS' if r['passed'] else 'FAIL'}  {r['test']}")
        if note:
            print(note)
        print(f"{summary['passed']}/{summary['total']} tests passed")

    if args.output:
        out = {
            "problem": problem,
            "reasoning_chain": chain,
            "final_code": chain[-1],
            "entry_point": entry_point,
            "checkpoint": checkpoint,
            "checkpoint_stage": metrics.get("stage_id"),
            "temperature": temperature,
        }
        if args.model:
            out["model"] = args.model
            if wants_tests:
                out["test_model"] = args.test_model or args.model
        if args.generate_tests:
            out["test_writer_input"] = writer_input
            out["test_agreement"] = not args.no_test_agreement
            out["tests"] = results
            out["summary"] = {**summary, "note": note} if note else summary
        if pick is not None:
            out["ranking"] = pick.to_dict()
            out["samples"] = [{"final_code": code, "passed": row} for code, row in zip(codes, matrix)]
        write_atomically(args.output, json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
