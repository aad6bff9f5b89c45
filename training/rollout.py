"""Rollouts: sample a stage for a batch of problems, and run the code stage in the sandbox.

`Rollouts.sample` builds each problem's prefix (the generator's own greedy
stages 1..k-1, cached per stage, since training stage k barely moves the
earlier ones) and samples G candidates of stage k. At the code stage,
`execute` has the discriminator write tests (`write_tests`), validates them
on the reference solution, and runs every candidate on the reference tests
and on the discriminator's tests in one sandbox batch. `lookahead` completes
a stage 1-4 candidate's chain to code and runs it. Both keep the chains they
ran, labelled, for the outcome judge (`StageBatch.labelled`, judge.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.base import Rollout
from reasoning.stages import NUM_STAGES, build_prompt, build_test_prompt, extract_tests, get_stage
from training.chains import LabelledChain, chain_passed, generate_chains
from training.extra_tests import Labeller, label_stats
from training.rewards import pass_fraction

TESTS_PER_SAMPLE = 3  # asserts per test-writer sample (warm-up examples have the same size)


@dataclass
class TestBatch:
    """The discriminator's tests for a code-stage batch, and what they caught."""

    __test__ = False  # not a pytest class, whatever imports it

    rollout: object  # Rollout of the test samples: T per problem, or one per candidate when the writer reads code
    samples_per_problem: int
    tests: list  # per problem: unique tests pooled from its samples, then its mistake-book tests
    sample_tests: list  # per sample: its tests
    passes_reference: list  # per problem: list[bool] per pooled test (False for a forgeable one left out)
    forgeable: list = field(default_factory=list)  # per problem: list[bool] per pooled test
    written: list = field(default_factory=list)  # per problem: the first `written` pooled tests are the writer's (all if empty)
    book: list = field(default_factory=list)  # per problem: the pooled-test indices of its mistake-book tests (none if empty)
    # per problem: None (every candidate runs every pooled test) or G lists of the pooled-test indices each ran
    runs: list = field(default_factory=list)
    candidate_results: list = field(default_factory=list)  # per problem: G lists of bool, one per test it ran
    # test_labels=reference: per sample, (status, pool index) of each test it wrote (extra_tests.py)
    labels: list = field(default_factory=list)
    fuzzed: list = field(default_factory=list)  # per problem: how many fuzz tests close its pool

    @classmethod
    def cat(cls, batches: list) -> "TestBatch":
        """The problems of several test batches, in order."""
        if len(batches) == 1:
            return batches[0]
        return cls(
            rollout=Rollout.cat([b.rollout for b in batches]) if batches[0].rollout is not None else None,
            samples_per_problem=batches[0].samples_per_problem,
            **{name: [x for b in batches for x in getattr(b, name)]
               for name in ("tests", "sample_tests", "passes_reference", "forgeable", "written", "book", "runs",
                            "candidate_results", "labels", "fuzzed")},
        )

    def runs_of(self, b: int, g: int) -> list:
        """The pooled-test indices of problem b that its candidate g ran."""
        runs = self.runs[b] if self.runs else None  # none given: every candidate ran the pool
        return range(len(self.tests[b])) if runs is None else runs[g]

    def valid_results(self) -> list:
        """Per candidate (problem-major), its results on the tests it ran that the reference passes."""
        return [
            [r for r, j in zip(row, self.runs_of(b, g)) if self.passes_reference[b][j]]
            for b, rows in enumerate(self.candidate_results)
            for g, row in enumerate(rows)
        ]

    def caught_tests(self, b: int, g: int) -> list:
        """The valid tests of problem b that its candidate g failed."""
        return [self.tests[b][j] for r, j in zip(self.candidate_results[b][g], self.runs_of(b, g))
                if self.passes_reference[b][j] and not r]

    def book_runs(self) -> tuple:
        """(runs, failures): mistake-book tests run on candidates, and how many the candidates failed."""
        runs = hits = 0
        for b, rows in enumerate(self.candidate_results):
            for g, row in enumerate(rows):
                for r, j in zip(row, self.runs_of(b, g)):
                    if self.book and j in self.book[b]:
                        runs += 1
                        hits += not r
        return runs, hits


@dataclass
class StageBatch:
    """One rollout of stage k: G completions for each of B problems, prompt-major."""

    stage_id: int
    problems: list  # B problems
    group_size: int
    prefixes: list  # B lists of stages 1..k-1
    rollout: object  # models' Rollout for the N = B*G completions
    completions: list  # N extracted stage texts
    rewards: list = field(default_factory=list)  # N floats in [0, 1]
    terms: dict = field(default_factory=dict)  # name -> N values (None = not applicable)
    # Code stage only:
    reference_results: list = field(default_factory=list)  # N lists of bool, on the tests rewards may use
    test_batch: TestBatch | None = None  # the test writer's rollout and CURE data
    forgeable_tests_excluded: int = 0  # forgeable tests (reference and the writer's) rewards left out
    labelled: list = field(default_factory=list)  # judge.LabelledChain: chains whose code this batch ran
    # rollout_chain=trajectory below stage 5: each completion's whole sampled chain (stages 1..5); the
    # rollout then holds stages k..5, stage by stage, N rows each
    chains: list | None = None

    @property
    def is_code(self) -> bool:
        return get_stage(self.stage_id).is_code

    @property
    def runs_code(self) -> bool:
        """The batch's code runs in the sandbox: the code stage, or a sampled trajectory that ends in code."""
        return self.is_code or self.chains is not None

    @property
    def codes(self) -> list:
        """Each completion's code: the completion itself at the code stage, its chain's last stage otherwise."""
        return [c[-1] for c in self.chains] if self.chains is not None else self.completions

    @property
    def stages_per_completion(self) -> int:
        """Rollout rows per completion: one, or each sampled stage of a trajectory."""
        return len(self.rollout) // len(self.completions) if self.completions else 1

    @classmethod
    def cat(cls, batches: list) -> "StageBatch":
        """The groups of several scored rollouts of one stage, in order (dynamic sampling's extra draws)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        names = [name for b in batches for name in b.terms]
        terms = {name: [v for b in batches for v in b.terms.get(name, [None] * len(b.completions))]
                 for name in dict.fromkeys(names)}
        tests = [b.test_batch for b in batches]
        return cls(
            stage_id=first.stage_id,
            problems=[p for b in batches for p in b.problems],
            group_size=first.group_size,
            prefixes=[x for b in batches for x in b.prefixes],
            rollout=_cat_rollouts(batches),
            completions=[c for b in batches for c in b.completions],
            rewards=[r for b in batches for r in b.rewards],
            terms=terms,
            reference_results=[r for b in batches for r in b.reference_results],
            test_batch=TestBatch.cat(tests) if all(t is not None for t in tests) else None,
            forgeable_tests_excluded=sum(b.forgeable_tests_excluded for b in batches),
            labelled=[c for b in batches for c in b.labelled],
            chains=[c for b in batches for c in b.chains] if first.chains is not None else None,
        )

    def per_completion(self, values: list) -> list:
        return [v for v in values for _ in range(self.group_size)]

    def passed(self) -> list:
        """Per candidate of a code-stage batch: whether it passed every reference test it was scored on (the visible ones)."""
        return [chain_passed(r) for r in self.reference_results]

    def stats(self) -> dict:
        """The batch's row of the metrics log: rewards, each term, pass rate, test validity, length."""
        row = {"reward": float(np.mean(self.rewards)), "reward_std": float(np.std(self.rewards))}
        for name, values in self.terms.items():
            applicable = [v for v in values if v is not None]
            if applicable:
                row[f"reward_{name}"] = float(np.mean(applicable))
        if self.runs_code:
            # the batch's share of candidates passing every reference test it was scored on
            row["train_pass_rate"] = float(np.mean(self.passed()))
            row["forgeable_tests_excluded"] = self.forgeable_tests_excluded
            tb = self.test_batch
            if tb is not None and tb.fuzzed:
                row["fuzz_tests_per_problem"] = float(np.mean(tb.fuzzed))
            if tb is not None and tb.labels:
                row.update(label_stats(tb, len(self.problems)))
            elif tb is not None and tb.rollout is not None:
                # the writer's own tests (the mistake book's were valid when they entered it)
                written = tb.written or [len(per) for per in tb.passes_reference]
                flat = [ok for per, n in zip(tb.passes_reference, written) for ok in per[:n]]
                row["test_validity"] = float(np.mean(flat)) if flat else 0.0
                row["tests_per_problem"] = len(flat) / len(self.problems)
                row["valid_tests_per_problem"] = sum(flat) / len(self.problems)
                forgeable = [f for per in tb.forgeable for f in per]
                row["test_writer_forgeable_share"] = float(np.mean(forgeable)) if forgeable else 0.0
        lengths = self.rollout.completion_mask.sum(dim=1).float()
        row["completion_length"] = lengths.mean().item()
        return row


def _cat_rollouts(batches: list):
    """The rollouts of several batches as one, stage-major like each of them: all rows of stage k, then k+1..."""
    S = batches[0].stages_per_completion
    if S == 1:
        return Rollout.cat([b.rollout for b in batches])
    n = [len(b.completions) for b in batches]
    return Rollout.cat([b.rollout.rows(s * m, (s + 1) * m) for s in range(S) for b, m in zip(batches, n)])


class Rollouts:
    """Sampling and execution for one run: both players, the sandbox, the config's budgets."""

    def __init__(self, generator, discriminator, sandbox, config, dist):
        self.generator = generator
        self.discriminator = discriminator
        self.sandbox = sandbox
        self.config = config
        self.dist = dist
        # (problem id, stage) -> stages 1..k-1, written by the current policy: the trainer clears it
        # after every generator update, so a rollout never continues a prefix an older policy wrote
        self.prefix_cache: dict = {}
        self.prefix_seconds = 0.0  # time spent writing prefixes, read (and reset) by the trainer's log
        self.labeller = Labeller(sandbox, config.seed)  # the reference's values for the writer's and the fuzzer's calls

    def sample(self, stage_id: int, problems: list) -> StageBatch:
        """Sample G candidate outputs of stage k for each problem, after its own prefix.

        With rollout_chain=trajectory below the code stage, each candidate's
        chain goes on to code, one sampled stage at a time (`StageBatch.chains`).
        """
        config = self.config
        prefixes = self.prefixes(problems, stage_id)
        prompts = [build_prompt(p.prompt, prefix, stage_id) for p, prefix in zip(problems, prefixes)]
        ro = self._sample(prompts, stage_id, config.group_size)
        completions = [get_stage(stage_id).extract(t) for t in ro.texts]
        chains = None
        if config.rollout_chain == "trajectory" and stage_id < NUM_STAGES:
            G = config.group_size
            chains = [list(prefixes[i // G]) + [text] for i, text in enumerate(completions)]
            parts = [ro]
            texts = [p.prompt for p in problems for _ in range(G)]
            for later in range(stage_id + 1, NUM_STAGES + 1):
                step = self._sample([build_prompt(t, c, later) for t, c in zip(texts, chains)], later, 1)
                step.num_samples = G  # the rows keep the first stage's grouping: problem b's G chains
                parts.append(step)
                for chain, text in zip(chains, step.texts):
                    chain.append(get_stage(later).extract(text))
            ro = Rollout.cat(parts)
        return StageBatch(
            stage_id=stage_id,
            problems=problems,
            group_size=config.group_size,
            prefixes=prefixes,
            rollout=ro,
            completions=completions,
            chains=chains,
        )

    def _sample(self, prompts: list, stage_id: int, num_samples: int):
        config = self.config
        self.generator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.generator.model):
            return self.generator.sample(
                prompts, num_samples=num_samples, max_new_tokens=config.max_new_tokens[stage_id - 1],
                temperature=config.temperature, top_p=config.top_p,
            )

    def prefixes(self, problems: list, stage_id: int) -> list:
        """The generator's own greedy stages 1..k-1 for each problem (cached until `prefix_cache` is cleared)."""
        if stage_id == 1:
            return [[] for _ in problems]
        missing = [p for p in problems if (p.id, stage_id) not in self.prefix_cache]
        if missing:
            t0 = time.time()
            chains = self.generate_chains(missing, upto=stage_id - 1)
            self.prefix_seconds += time.time() - t0
            for p, chain in zip(missing, chains):
                self.prefix_cache[(p.id, stage_id)] = chain
        return [self.prefix_cache[(p.id, stage_id)] for p in problems]

    def generate_chains(self, problems: list, upto: int = NUM_STAGES, start: list | None = None) -> list:
        """Greedy stages len(start)+1..upto for each problem, with this run's token budgets."""
        with self.dist.gathered(self.generator.model):
            return generate_chains(
                self.generator, [p.prompt for p in problems], self.config.max_new_tokens, upto=upto, start=start
            )

    def discriminator_scores(self, batch: StageBatch) -> list:
        """The scoring head's probability for each completion, no gradient."""
        problems, prefixes = batch.per_completion(batch.problems), batch.per_completion(batch.prefixes)
        items = [(p.prompt, prefix, batch.stage_id, text) for p, prefix, text in zip(problems, prefixes, batch.completions)]
        self.discriminator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.discriminator.model):
            logits = self.discriminator.score_batch(items)
        return [float(x) for x in torch.sigmoid(logits.float()).tolist()]

    def execute(self, batch: StageBatch, with_tests: bool, book_tests: list | None = None) -> None:
        """Run each candidate on the reference tests and, `with_tests`, on tests the discriminator writes.

        `book_tests` (per problem) are the mistake book's tests, run on every candidate beside the writer's.
        """
        G = batch.group_size
        codes = batch.codes
        tests_batch = None
        fuzz = self.labeller.fuzz(batch.problems, self.config.fuzz_tests) if self.config.fuzz_tests else None
        if with_tests or fuzz:
            reads = self.config.test_writer_input == "code"
            tests_batch = self.write_tests(batch.problems, codes if reads else None, book_tests, fuzz, writer=with_tests)
        jobs = []
        for b, problem in enumerate(batch.problems):
            for g in range(G):
                extra = [tests_batch.tests[b][j] for j in tests_batch.runs_of(b, g)] if tests_batch else []
                jobs.append((codes[b * G + g], list(problem.tests) + extra, problem.entry_point))
        results = self.sandbox.run_batch(jobs)
        batch.reference_results = []
        batch.forgeable_tests_excluded = 0
        if tests_batch:
            tests_batch.candidate_results = [[] for _ in batch.problems]
            if not self.config.allow_forgeable_tests:
                batch.forgeable_tests_excluded = sum(f for per in tests_batch.forgeable for f in per)
        for b, problem in enumerate(batch.problems):
            n_ref = len(problem.tests)
            group = results[b * G:(b + 1) * G]
            reference, excluded = self.trusted_outcomes(group, n_ref)
            batch.reference_results.extend(reference)
            batch.forgeable_tests_excluded += excluded
            prefixes = ([tuple(c[:NUM_STAGES - 1]) for c in batch.chains[b * G:(b + 1) * G]]
                        if batch.chains is not None else [tuple(batch.prefixes[b])] * G)
            batch.labelled += [LabelledChain(problem.id, problem.prompt, prefix, chain_passed(o))
                               for prefix, o in zip(prefixes, reference)]
            if tests_batch:
                tests_batch.candidate_results[b] = [r.outcomes(len(jobs[b * G + g][1]))[n_ref:]
                                                    for g, r in enumerate(group)]
        batch.test_batch = tests_batch

    def trusted_outcomes(self, results: list, n: int) -> tuple[list, int]:
        """Each result's outcomes on the first n tests, less the forgeable ones unless the config allows them.

        Forgeability belongs to a test, not to a candidate: a test that any
        of `results` ran in assert mode is left out of all of them, so that
        every candidate is scored on the same tests. Also returns how many
        tests were left out.
        """
        outcomes = [r.outcomes(n) for r in results]
        if self.config.allow_forgeable_tests:
            return outcomes, 0
        forgeable = [any(flags) for flags in zip(*(r.forgeable_at(n) for r in results))] if results else []
        if not any(forgeable):
            return outcomes, 0
        return [[o for o, f in zip(row, forgeable) if not f] for row in outcomes], sum(forgeable)

    def write_tests(self, problems: list, codes: list | None = None, book_tests: list | None = None,
                    fuzz_tests: list | None = None, writer: bool = True) -> TestBatch:
        """The writer's tests, pooled per problem with the mistake book's and the fuzzer's, and checked on the reference.

        Without `codes` the writer samples test_samples completions per
        problem from its statement, and every candidate runs the whole pool.
        With `codes` (G candidates per problem, problem-major) it samples one
        completion per candidate, reading that candidate's code, and each
        candidate runs the tests written for it, the book's and the fuzzer's
        (with code_tests_scope=group, the whole pool). With test_labels=reference
        the reference fills in each written call's value (extra_tests.py).
        `fuzz_tests` (per problem) are already labelled; `writer=False` samples no writer.
        """
        config = self.config
        labelled = config.test_labels == "reference"
        T, ro, sample_tests, labels = 0, None, [], []
        if writer:
            ro, T = self._sample_tests(problems, codes)
            for i, text in enumerate(ro.texts):
                tests, _dropped = extract_tests(text, problems[i // T].entry_point)
                sample_tests.append(tests[:TESTS_PER_SAMPLE])  # one sample is a handful of asserts, not a whole file
        if labelled and writer:
            pooled, labels = self.labeller.pool(problems, sample_tests, T)
        else:
            pooled = [list(dict.fromkeys(t for s in sample_tests[b * T:(b + 1) * T] for t in s)) for b in range(len(problems))]
        written, book, fuzzed, runs = [], [], [], []
        for b, pool in enumerate(pooled):
            written.append(len(pool))
            kept = list(dict.fromkeys(book_tests[b] if book_tests else []))
            pool.extend(x for x in kept if x not in pool)
            book.append([pool.index(x) for x in kept])
            fresh = [x for x in (fuzz_tests[b] if fuzz_tests else []) if x not in pool]
            pool.extend(fresh)
            fuzzed.append(len(fresh))
            shared = book[b] + list(range(len(pool) - len(fresh), len(pool)))  # what every candidate runs
            if codes is None or config.code_tests_scope == "group" or not writer:
                runs.append(None)
            else:  # each candidate's own sample's tests (labelled: the pooled calls it made), then the shared ones
                own = ([sorted({j for _, j in labels[b * T + t] if j >= 0}) for t in range(T)] if labelled
                       else [[pool.index(x) for x in sample_tests[b * T + t]] for t in range(T)])
                runs.append([mine + [j for j in shared if j not in mine] for mine in own])
        passes_reference, forgeable = self._check_on_reference(problems, pooled)
        return TestBatch(rollout=ro, samples_per_problem=T, tests=pooled, sample_tests=sample_tests,
                         passes_reference=passes_reference, forgeable=forgeable, written=written, book=book, runs=runs,
                         labels=labels, fuzzed=fuzzed)

    def _sample_tests(self, problems: list, codes: list | None) -> tuple:
        """The writer's rollout and its samples per problem: test_samples from each statement, or one per candidate's code."""
        config = self.config
        if codes is None:
            T = config.test_samples
            prompts = [build_test_prompt(p.prompt, p.entry_point) for p in problems]
        else:
            T = len(codes) // len(problems)
            prompts = [build_test_prompt(p.prompt, p.entry_point, code)
                       for b, p in enumerate(problems) for code in codes[b * T:(b + 1) * T]]
        self.discriminator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.discriminator.model):
            ro = self.discriminator.sample(prompts, num_samples=T if codes is None else 1,
                                           max_new_tokens=config.test_max_new_tokens, temperature=config.test_temperature)
        ro.num_samples = T  # the writer's groups are the problem's samples, whatever each read
        return ro, T

    def _check_on_reference(self, problems: list, pooled: list) -> tuple:
        """(passes_reference, forgeable) per pooled test; a forgeable test counts as invalid unless the config allows it."""
        validation = iter(self.sandbox.run_batch(
            [(p.reference_solution, pool, p.entry_point) for p, pool in zip(problems, pooled) if pool]
        ))
        passes_reference, forgeable = [], []
        for pool in pooled:
            result = next(validation) if pool else None
            passes_reference.append(result.outcomes(len(pool)) if pool else [])
            forgeable.append(result.forgeable_at(len(pool)) if pool else [])
        if not self.config.allow_forgeable_tests:  # no reward uses a forgeable test
            passes_reference = [[ok and not f for ok, f in zip(oks, flags)]
                                for oks, flags in zip(passes_reference, forgeable)]
        return passes_reference, forgeable

    def lookahead(self, batch: StageBatch) -> list:
        """Complete each candidate's chain greedily to code; the pass fraction on the reference tests."""
        problems = batch.per_completion(batch.problems)
        starts = [prefix + [text] for prefix, text in zip(batch.per_completion(batch.prefixes), batch.completions)]
        chains = self.generate_chains(problems, upto=NUM_STAGES, start=starts)
        results = self.sandbox.run_batch([(c[-1], p.tests, p.entry_point) for c, p in zip(chains, problems)])
        G = batch.group_size
        fractions = []
        for b, problem in enumerate(batch.problems):
            outcomes, _ = self.trusted_outcomes(results[b * G:(b + 1) * G], len(problem.tests))
            fractions.extend(pass_fraction(o) for o in outcomes)
            batch.labelled += [LabelledChain(problem.id, problem.prompt, tuple(c[:NUM_STAGES - 1]), chain_passed(o))
                               for c, o in zip(chains[b * G:(b + 1) * G], outcomes)]
        return fractions
