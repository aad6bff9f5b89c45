"""An evaluation report as a markdown table, and its samples as human-eval JSONL."""

from __future__ import annotations

import json
import math

from training.runtime.cli import write_atomically


def write_samples_jsonl(path: str, report: dict) -> int:
    """Write every sample of a report made with keep_samples as human-eval JSONL lines; return how many.

    One line per sample, `{"task_id": <problem id>, "completion": ...}`, problem by
    problem and in sample order, for every source of the report.
    """
    lines = []
    for result in report["results"]:
        for row in result.get("problems", []):
            if "completions" not in row:
                raise ValueError("the report holds no samples; evaluate with keep_samples=True")
            lines += [json.dumps({"task_id": row["id"], "completion": c}) for c in row["completions"]]
    write_atomically(path, "".join(line + "\n" for line in lines))
    return len(lines)


def to_markdown(report: dict) -> str:
    """A table: source, problems, n, pass@k..., visible pass@1 and false-positive rate, reranked pass@1."""
    ks = report.get("ks") or [1]
    rerank = bool(report.get("num_samples_rerank"))
    writer = report.get("rerank_writer") if rerank else None
    visible = next((r["visible_tests"] for r in report["results"] if r.get("visible_tests")), None)
    validity = bool(report.get("test_validity"))
    if report.get("canonical"):
        title = "canonical solutions"
    elif report.get("model"):
        title = f"model `{report['model']}` (untrained)"
    else:
        title = f"checkpoint `{report.get('checkpoint')}`"
    cols = ["source", "problems", "n"] + [f"pass@{k}" for k in ks] + ["test pass rate"]
    if visible:
        cols += [f"visible pass@1 ({visible} tests)", "false-positive rate"]
    if rerank:
        cols += [f"reranked pass@1 (of {report['num_samples_rerank']})", "random pick pass@1"]
    if writer:
        cols.append(f"reranked pass@1, writer `{writer}`")
    if validity:
        other = "without" if report.get("test_agreement", True) else "with"
        reads = report.get("test_writer_input", "problem")
        cols += [f"discriminator test validity (writer reads {reads})", "its tests per problem",
                 "valid tests per problem", "catch rate of the first sample", f"validity {other} agreement"]
    forgeable = any(r.get("forgeable_problems") for r in report["results"])
    if forgeable:
        cols.append("problems with forgeable tests")
    lines = [f"Evaluation of {title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report["results"]:
        cells = [f"`{r['source']}`", str(r["num_problems"]), str(r.get("n", 0))]
        cells += [_fmt(r.get(f"pass@{k}")) for k in ks]
        cells.append(_fmt(r.get("test_pass_rate")))
        if visible:
            cells += [_fmt(r.get("visible_pass@1")), _fmt(r.get("false_positive_rate"))]
        if rerank:
            rr = r.get("rerank") or {}
            cells += [_fmt(rr.get("pass@1")), _fmt(rr.get("random_pick_pass@1"))]
        if writer:
            cells.append(_fmt(((r.get("rerank") or {}).get("writer") or {}).get("pass@1")))
        if validity:
            tv = r.get("tests") or {}
            om = tv.get("other_merge") or {}
            cells += [_fmt(tv.get(k)) for k in ("test_validity", "tests_per_problem", "valid_tests_per_problem", "catch_rate")]
            cells.append(_fmt(om.get("test_validity")))
        if forgeable:
            cells.append(str(r.get("forgeable_problems", 0)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
