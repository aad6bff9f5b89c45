"""What the multi-process test workers share: each rank's record, written where the test reads it."""

from __future__ import annotations

import json
import os


def write_rank_record(out_dir: str, rank: int, record: dict) -> None:
    """OUT_DIR/rank<R>.json, read back by tests/test_distributed.py."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
