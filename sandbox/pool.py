"""Trainer-side API: ``Sandbox`` (a pool of workers) and ``ExecutionResult``.

Workers are separate interpreters started with ``subprocess`` (never a fork of
the trainer, which may hold torch, CUDA contexts and threads). They start on
first use, restart if they die, and stop on ``close()``, on leaving a ``with``
block, or at interpreter exit. Several ``Sandbox`` objects, in one process or
in several (one per training rank), are independent.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, field

from .isolation import LEVEL_NAMESPACES, LEVELS
from .protocol import HEADER, ProtocolError, pack, write_all

log = logging.getLogger(__name__)

STATUSES = ("ok", "failed", "syntax_error", "timeout", "memory", "output_limit", "error")
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_warned_levels: set[str] = set()
_warn_lock = threading.Lock()


class SandboxUnavailable(RuntimeError):
    """The sandbox's own workers could not start (an environment problem, not the candidate's)."""


@dataclass
class ExecutionResult:
    passed: bool = field(metadata={"help": "True only if every test passed and the job ended cleanly"})
    test_results: list = field(metadata={"help": "one bool per test, in the order given"})
    status: str = field(metadata={"help": "one of " + ", ".join(STATUSES)})
    error: str | None = field(default=None, metadata={"help": "short reason when not passed"})
    duration_s: float = field(default=0.0, metadata={"help": "wall time of the job in the worker"})
    output: str = field(default="", metadata={"help": "first 2 KB of the job's stdout/stderr"})
    forgeable: list = field(default_factory=list, metadata={"help": "one bool per test: True where the verdict was reached inside the candidate's process (assert mode), which code that introspects its own process can forge; empty when nothing ran"})

    def to_dict(self) -> dict:
        return asdict(self)

    def outcomes(self, n: int) -> list:
        """Exactly n booleans, one per test given: a job that crashed before reporting them all fails the rest."""
        results = [bool(r) for r in list(self.test_results or [])[:n]]
        return results + [False] * (n - len(results))

    def forgeable_at(self, n: int) -> list:
        """Exactly n booleans, one per test given: True for a test whose verdict is forgeable."""
        flags = [bool(f) for f in list(self.forgeable or [])[:n]]
        return flags + [False] * (n - len(flags))


@dataclass
class SandboxConfig:
    """The sandbox's limits; also the `sandbox` section of TrainingConfig (`--sandbox.workers=1`)."""

    timeout_s: float = field(default=2.0, metadata={"help": "Wall-clock limit per sandbox job (code plus all its tests), seconds."})
    memory_mb: int = field(default=512, metadata={"help": "Address-space limit per sandbox job (RLIMIT_AS), MiB."})
    workers: int = field(default=2, metadata={"help": "Parallel sandbox worker processes."})
    isolation: str = field(default="auto", metadata={"help": "auto (the strongest this machine allows), or force one of: " + ", ".join(LEVELS) + "."})
    max_output_bytes: int = field(default=1 << 20, metadata={"help": "Cap on a job's stdout+stderr, bytes; beyond it the job is killed."})
    max_file_mb: int = field(default=16, metadata={"help": "Largest file a job may write (RLIMIT_FSIZE), MiB."})
    max_procs: int = field(default=32, metadata={"help": "Processes and threads per job (RLIMIT_NPROC, under a uid drop)."})
    tmpfs_mb: int = field(default=64, metadata={"help": "Size of the worker's private /tmp that holds job directories (namespaces level), MiB."})
    max_code_chars: int = field(default=1_000_000, metadata={"help": "Longer code fails without running."})
    allow_site_packages: bool = field(default=False, metadata={"help": "Let jobs import third-party packages (the namespaces level hides site-packages)."})
    hide_paths: tuple[str, ...] = field(default=(), metadata={"help": "More directories to hide from jobs (namespaces level)."})
    start_timeout_s: float = field(default=30.0, metadata={"help": "How long a worker may take to start, seconds."})

    def __post_init__(self):
        if self.isolation != "auto" and self.isolation not in LEVELS:
            raise ValueError(f"isolation must be 'auto' or one of {LEVELS}, got {self.isolation!r}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.memory_mb < 32:
            raise ValueError("memory_mb below 32 leaves no room for the interpreter itself")


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process, driven by one thread at a time."""

    def __init__(self, cfg: SandboxConfig):
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None
        self.isolation = ""
        self.notes: list[str] = []
        self.uid = -1

    def start(self) -> None:
        wcfg = {k: getattr(self.cfg, k) for k in (
            "timeout_s", "memory_mb", "isolation", "max_output_bytes", "max_file_mb",
            "max_procs", "tmpfs_mb", "max_code_chars", "allow_site_packages")}
        wcfg["hide_paths"] = [str(p) for p in self.cfg.hide_paths]
        wcfg["project_root"] = _PROJECT_ROOT
        boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from sandbox.worker import main; main()")
        # SANDBOX_DEBUG=1 lets the worker's tracebacks through to our stderr.
        stderr = None if os.environ.get("SANDBOX_DEBUG") else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", boot, _PROJECT_ROOT, json.dumps(wcfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            close_fds=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                          "LANG": "C.UTF-8"})

    def await_hello(self) -> None:
        hello = self._read(self.cfg.start_timeout_s)
        if "fatal" in hello:
            self.kill()
            raise SandboxUnavailable(f"sandbox worker could not start: {hello['fatal']}")
        self.isolation, self.notes, self.uid = hello["isolation"], hello["notes"], hello["uid"]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, req: dict, timeout: float) -> dict:
        try:
            write_all(self.proc.stdin.fileno(), pack(json.dumps(req).encode()))
        except OSError as e:
            raise _WorkerDied(f"write failed: {e}") from e
        resp = self._read(timeout)
        if "fatal" in resp:
            raise _WorkerDied(resp["fatal"])
        return resp

    def _read(self, timeout: float) -> dict:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        head = self._read_exact(fd, HEADER.size, deadline)
        (n,) = HEADER.unpack(head)
        return json.loads(self._read_exact(fd, n, deadline))

    @staticmethod
    def _read_exact(fd: int, n: int, deadline: float) -> bytes:
        # poll, not select: a trainer may well hold more than 1024 open fds.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise _WorkerDied("worker did not answer in time")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise _WorkerDied("worker exited")
            buf += chunk
        return bytes(buf)

    def kill(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=2)    # stdin EOF: the manager exits by itself
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _shutdown(workers: list, owner_pid: int) -> None:
    # A forked child (a DataLoader worker, say) inherits this object but not
    # the workers: leave them to the process that started them.
    if os.getpid() != owner_pid:
        return
    for w in workers:
        w.kill()


class Sandbox:
    """Runs untrusted code against tests in isolated, disposable processes.

    >>> with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sb:
    ...     r = sb.run("def f(x):\\n    return x + 1\\n", ["assert f(1) == 2"], entry_point="f")
    ...     r.passed, r.status
    (True, 'ok')

    ``run`` and ``run_batch`` never raise because of what the code does; every
    failure is an ``ExecutionResult`` with a status and a reason. Keyword
    options are the fields of :class:`SandboxConfig`.
    """

    def __init__(self, timeout_s: float = 2.0, memory_mb: int = 512, workers: int = 2,
                 **options):
        self.config = SandboxConfig(timeout_s=timeout_s, memory_mb=memory_mb,
                                    workers=workers, **options)
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._owner_pid = os.getpid()
        self._workers = [_Worker(self.config) for _ in range(self.config.workers)]
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._owner_pid)

    # ---- lifecycle ------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._owner_pid != os.getpid():
            # Used in a forked child: its own workers, started on demand.
            self._finalizer.detach()
            self._reset()
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("Sandbox is closed")
            try:
                for w in self._workers:   # start all, then wait: they boot in parallel
                    w.start()
                for w in self._workers:
                    w.await_hello()
            except (OSError, _WorkerDied, RuntimeError, ValueError) as e:
                _shutdown(self._workers, self._owner_pid)
                raise RuntimeError(f"sandbox workers could not start: {e}") from e
            for w in self._workers:
                self._idle.put(w)
            self._started = True
        self._announce(self._workers[0])

    def _announce(self, w: _Worker) -> None:
        level = w.isolation
        if self.config.isolation not in ("auto", level):
            why = "; ".join(w.notes) or "not permitted here"
            msg = (f"sandbox isolation {self.config.isolation!r} requested but only "
                   f"{level!r} is available ({why})")
        elif level != LEVEL_NAMESPACES and self.config.isolation == "auto":
            msg = (f"sandbox runs at reduced isolation {level!r}: "
                   f"{'; '.join(w.notes) or 'namespaces not available'}")
        elif level != LEVEL_NAMESPACES:
            msg = f"sandbox runs at reduced isolation {level!r} (forced by configuration)"
        else:
            return
        with _warn_lock:
            if level in _warned_levels:
                return
            _warned_levels.add(level)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        log.warning(msg)

    @property
    def isolation(self) -> str:
        """The active isolation level: 'namespaces+uid', 'uid' or 'rlimits'."""
        self._ensure_started()
        return self._workers[0].isolation

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- running --------------------------------------------------------
    def run(self, code: str, tests: list, entry_point: str | None = None, *,
            timeout_s: float | None = None) -> ExecutionResult:
        """Run ``code`` and then each test (a string) against it, in a fresh process."""
        self._ensure_started()
        timeout = float(timeout_s or self.config.timeout_s)
        tests = list(tests) if tests is not None else []
        if not tests:
            return ExecutionResult(False, [], "error", "no tests given: nothing to verify")
        if not isinstance(code, str):
            return ExecutionResult(False, [False] * len(tests), "syntax_error",
                                   f"code is a {type(code).__name__}, not a string")
        # Non-string tests become null: the worker reports them as invalid.
        tests = [t if isinstance(t, str) else None for t in tests]
        req = {"code": code, "tests": tests, "entry_point": entry_point, "timeout_s": timeout}
        w = self._idle.get()
        try:
            return self._run_on(w, req, timeout, len(tests))
        finally:
            self._idle.put(w)

    def run_batch(self, jobs: list, *, timeout_s: float | None = None) -> list[ExecutionResult]:
        """Run ``(code, tests[, entry_point])`` jobs in parallel; results in input order."""
        return self._in_parallel(jobs, lambda job: self.run(job[0], job[1], job[2] if len(job) > 2 else None,
                                                            timeout_s=timeout_s))

    def label(self, code: str, tests: list, entry_point: str | None = None, *,
              timeout_s: float | None = None) -> list[dict]:
        """Run trusted ``code`` (a reference solution) on each test's call; the tests with its results filled in.

        One dict per test: ``call`` (the call with its arguments evaluated,
        for telling copies apart; None if the test is not one call of
        ``entry_point``), ``test`` (``assert f(args) == <result>``, or None),
        ``agrees`` (the test as written passes on ``code``) and ``error``
        (why there is no ``test``). The code runs in a job like any other.
        """
        self._ensure_started()
        tests = [t if isinstance(t, str) else None for t in (tests or [])]
        if not tests:
            return []
        timeout = float(timeout_s or self.config.timeout_s)
        req = {"op": "label", "code": code, "tests": tests, "entry_point": entry_point, "timeout_s": timeout}
        w = self._idle.get()
        try:
            resp = self._request(w, req, timeout)
        finally:
            self._idle.put(w)
        if isinstance(resp, str):
            return [{"call": None, "test": None, "agrees": False, "error": resp} for _ in tests]
        return resp["labels"]

    def label_batch(self, jobs: list, *, timeout_s: float | None = None) -> list[list[dict]]:
        """``label`` for ``(code, tests[, entry_point])`` jobs in parallel; answers in input order."""
        return self._in_parallel(jobs, lambda job: self.label(job[0], job[1], job[2] if len(job) > 2 else None,
                                                              timeout_s=timeout_s))

    def _in_parallel(self, jobs: list, fn) -> list:
        """fn(job) for every job, on as many threads as there are workers; results in input order."""
        self._ensure_started()
        jobs = list(jobs)
        results: list = [None] * len(jobs)
        it = iter(range(len(jobs)))
        it_lock = threading.Lock()

        def drive():
            while True:
                with it_lock:
                    i = next(it, None)
                if i is None:
                    return
                results[i] = fn(jobs[i])

        n_threads = min(len(self._workers), len(jobs))
        threads = [threading.Thread(target=drive, daemon=True) for _ in range(n_threads - 1)]
        for t in threads:
            t.start()
        if n_threads:
            drive()
        for t in threads:
            t.join()
        return results

    def _request(self, w: _Worker, req: dict, timeout: float) -> dict | str:
        """The worker's answer to one request, or why there is none (the worker is restarted)."""
        if self._closed:
            return "sandbox was closed"
        try:
            if not w.alive:
                self._restart(w)
            # The manager answers shortly after the deadline; the margin covers
            # killing and sweeping a job on a loaded machine.
            return w.request(req, timeout + 30.0)
        except (_WorkerDied, OSError, ProtocolError, ValueError, RuntimeError) as e:
            w.kill()
            if self._closed:
                return "sandbox was closed"
            log.warning("sandbox worker failed (%s); restarting it", e)
            return f"sandbox worker died ({e}); it was restarted"

    def _run_on(self, w: _Worker, req: dict, timeout: float, n_tests: int) -> ExecutionResult:
        resp = self._request(w, req, timeout)
        if isinstance(resp, str):
            return ExecutionResult(False, [False] * n_tests, "error", resp)
        return ExecutionResult(passed=resp["status"] == "ok", test_results=resp["test_results"],
                               status=resp["status"], error=resp["error"],
                               duration_s=resp["duration_s"], output=resp["output"],
                               forgeable=resp.get("forgeable", []))

    def _restart(self, w: _Worker) -> None:
        w.kill()
        w.start()
        w.await_hello()

    # For tests and diagnostics.
    def _worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def _job_uids(self) -> list[int]:
        return [w.uid for w in self._workers]

