"""Run reference solutions against their own tests through the project's sandbox."""

from sandbox import Sandbox

_SANDBOX = None


def sandbox() -> Sandbox:
    """One sandbox for the whole test session (closed at interpreter exit)."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Sandbox(timeout_s=5.0, memory_mb=512, workers=2)
    return _SANDBOX


def run_references(problems) -> list:
    """[(id, test, reason)] for every test that a problem's own reference solution fails."""
    results = sandbox().run_batch([(p.reference_solution, p.tests, p.entry_point) for p in problems])
    failures = []
    for p, r in zip(problems, results):
        for test, ok in zip(p.tests, r.outcomes(len(p.tests))):
            if not ok:
                failures.append((p.id, test, f"{r.status}: {r.error}"))
    return failures
