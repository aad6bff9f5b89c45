"""Isolated execution of untrusted, model-generated code against tests.

    from sandbox import Sandbox
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sb:
        r = sb.run(code, ["assert f(1) == 2"], entry_point="f")
        r.passed, r.test_results, r.status, r.error
        results = sb.run_batch([(code, tests, "f"), ...])

Layout:
    pool.py       Sandbox / ExecutionResult / SandboxConfig (trainer side)
    worker.py     worker manager process (trusted: holds expected values)
    zygote.py     fork-server: a small clean interpreter forking one process per job
    harness.py    code around the candidate inside the job process
    checks.py     test classification, result parsing, strict comparison
    isolation.py  namespaces and mounts (ctypes); limits.py: rlimits, uid drop
    protocol.py   framing on the pipes and sockets

See docs/sandbox.md for the threat model, isolation levels and measurements.
"""

from typing import TYPE_CHECKING

__all__ = ["Sandbox", "ExecutionResult", "SandboxConfig", "SandboxUnavailable", "STATUSES"]

if TYPE_CHECKING:  # pragma: no cover
    from .pool import STATUSES, ExecutionResult, Sandbox, SandboxConfig


def __getattr__(name):
    # Imported lazily: the fork-server imports this package too, and must not
    # carry the trainer-side machinery (threads, subprocess, logging) into
    # every job's memory.
    if name in __all__:
        from . import pool
        return getattr(pool, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
