"""Measuring players: pass@k of their samples, CodeT reranking with the test writer, the multi-seed experiment
runner and its table."""
