"""The benches' own arithmetic: footprint counting, the 1.5B projection, the generated markdown.

No timings are asserted; the benches themselves run from bench/run_all.sh.
"""

import os

import pytest

from bench._common import figure, figures_for, render_markdown
from bench.checkpoint_footprint import footprint, project, qwen2_params


def _write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)


def test_footprint_counts_a_hard_linked_file_once(tmp_path):
    _write(tmp_path / "stage_1" / "generator.pt", 1000)
    _write(tmp_path / "stage_2" / "generator.pt", 700)
    _write(tmp_path / "stage_2" / "metrics.json", 10)
    os.makedirs(tmp_path / "best")
    os.link(tmp_path / "stage_2" / "generator.pt", tmp_path / "best" / "generator.pt")
    os.symlink(tmp_path / "stage_1" / "generator.pt", tmp_path / "best" / "alias.pt")  # not counted at all

    f = footprint(str(tmp_path))

    assert f["naive_bytes"] == 1000 + 700 + 10 + 700
    assert f["ours_bytes"] == 1000 + 700 + 10
    assert (f["files"], f["inodes"]) == (4, 3)
    rows = {d["name"]: d for d in f["directories"]}
    assert [d["name"] for d in f["directories"]] == ["stage_1", "stage_2", "best"]
    assert rows["best"] == {"name": "best", "files": 1, "bytes": 700, "linked_bytes": 700}
    assert rows["stage_2"]["linked_bytes"] == 700 and rows["stage_1"]["linked_bytes"] == 0


def test_qwen2_params_by_hand():
    # hidden 4, 2 heads (head_dim 2), 1 kv head (kv width 2), ffn 8, vocab 10, 1 layer, tied:
    # embedding 40; q 16+4, k 8+2, v 8+2, o 16; mlp 3*32; norms 2*4; final norm 4
    assert qwen2_params(hidden=4, layers=1, intermediate=8, vocab=10, heads=2, kv_heads=1) == 204
    assert qwen2_params(hidden=4, layers=1, intermediate=8, vocab=10, heads=2, kv_heads=1, tied=False) == 244
    # Qwen2.5-Coder-1.5B's published count
    assert qwen2_params(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2) == 1_543_714_304


def test_projection_arithmetic():
    p = project(1_000_000_000, weight_bytes=2, optimizer_bytes=8)  # 2 players x 10 bytes per parameter
    assert p == {"per_dir": 20e9, "ours": 100e9, "naive": 140e9}
    assert project(10, weight_bytes=4, optimizer_bytes=0, players=1, own_dirs=6, linked_dirs=2)["naive"] == 320


SAMPLE = {
    "rl_step": {"figures": [
        figure("RL step (s)", "1.5 s", "TRL: 2.0 s", 1.33, ">= 1.0", True, "python bench/rl_step_vs_trl.py"),
        figure("other step (s)", "3 s", "peer: 2 s", 0.67, ">= 1.0", False, "python bench/x.py", "it is slow because Y"),
    ], "setup": {}},
    "generation": {
        "model": "tiny", "threads": 1, "prompts": 8, "samples_per_prompt": 1, "new_tokens": 128,
        "bare_generate_tok_s": 1000.0, "wrapper_sample_tok_s": 990.0, "wrapper_over_bare": 0.99,
        "wrapper_outside_generate_ms": 2.5, "wrapper_outside_generate_pct": 0.3,
    },
}


def test_markdown_has_a_row_per_figure_and_lists_what_bounds_them(monkeypatch):
    import bench._common as common

    monkeypatch.setattr(common, "_rl_section", lambda d: [])  # the sample has no phase profile
    text = render_markdown(SAMPLE)
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    # benches in run_all.sh's order: generation before the RL step
    expected = figures_for("generation", SAMPLE["generation"]) + figures_for("rl_step", SAMPLE["rl_step"])
    assert len(table) == len(expected) == 4
    for row, fig in zip(table, expected):
        assert row.startswith(f"| {fig['name']} |") and f"`{fig['command']}`" in row
    assert "| 1.33× | | `python bench/rl_step_vs_trl.py` |" in table[2]
    assert "| paired runs drift about ±10% with load |" in table[0]
    assert "## What bounds these figures" in text
    assert "- **other step (s)** (0.67×): it is slow because Y" in text
    assert "RL step (s)** (" not in text  # no explanation, no entry
    # the bench's own bound stays in the JSON, not in the table
    assert expected[2]["bound"] == ">= 1.0" and ">= 1.0" not in text


def test_markdown_ratio_note_follows_the_ratio(monkeypatch):
    import bench._common as common

    monkeypatch.setattr(common, "_rl_section", lambda d: [])
    f = figure("tree (GB)", "154 GB", "naive layout: 216 GB", 1.40, "", None, "python bench/y.py",
               "each stage keeps optimizer state", note="short", ratio_note="smaller than the naive layout")
    text = render_markdown({"rl_step": {"figures": [f], "setup": {}}})
    assert "| tree (GB) | 154 GB | naive layout: 216 GB | 1.40× | short | `python bench/y.py` |" in text
    assert "- **tree (GB)** (1.40× smaller than the naive layout): each stage keeps optimizer state" in text


def test_generation_figures_add_a_row_per_fast_engine_case():
    fast = [{"rows": 8, "prompts": 8, "samples_per_prompt": 1, "prompt_tokens": 90, "bare_generate_tok_s": 1000.0,
             "fast_tok_s": 2500.0, "fast_over_bare": 2.5},
            {"rows": 64, "prompts": 8, "samples_per_prompt": 8, "prompt_tokens": 90, "bare_generate_tok_s": 2000.0,
             "fast_tok_s": 9000.0, "fast_over_bare": 4.5, "fast_copied_prefix_tok_s": 6000.0,
             "shared_over_copied": 1.5}]
    figures = figures_for("generation", {**SAMPLE["generation"], "fast_engine": fast})
    assert len(figures) == 5
    assert "8 prompts x 8 sample(s)" in figures[3]["name"] and figures[3]["ratio"] == 4.5
    assert "one copy of its cache" in figures[4]["name"] and figures[4]["ratio"] == 1.5
    assert figures[4]["peer"] == "the cache copied to each sample: 6000"
    assert figures[2]["ours"] == "2500" and figures[2]["peer"] == "bare model.generate: 1000"


def test_markdown_marks_a_bench_that_wrote_nothing():
    text = render_markdown({}, missing={"footprint": "checkpoint_footprint.json was not written"})
    assert "| footprint | not measured: checkpoint_footprint.json was not written | | | | " in text


@pytest.mark.parametrize("name", ["rl_step_vs_trl", "checkpoint_footprint", "generation_bench", "shared_prefix_bench"])
def test_bench_scripts_parse_their_arguments(name):
    import importlib

    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
