"""The problems a run learns from and is measured on: the `Problem` record, its sources (the curriculum,
JSONL files, HumanEval, hub data sets), and which of a problem's tests a run may see."""
