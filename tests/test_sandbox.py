"""Sandbox API, result semantics and isolation properties.

Each isolation property the sandbox promises is checked here by a job that
tries to break it. Hostile reward-hacking programs are in
test_sandbox_hostile.py; HumanEval in test_sandbox_humaneval.py.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

from sandbox import ExecutionResult, Sandbox
from sandbox.checks import parse_value, plan_test, strict_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INC = "def f(x):\n    return x + 1\n"


def job_processes(uids) -> list[int]:
    """Host pids of live processes running under any of the sandbox's job uids."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) in uids:
                            found.append(int(name))
                        break
        except OSError:
            continue
    return found


def wait_no_job_processes(sb, timeout=2.0) -> list[int]:
    """Job processes still alive after ``timeout`` (none expected).

    At the rlimits level jobs run under our own uid, so they cannot be told
    apart from this process: nothing to check there.
    """
    if sb.isolation == "rlimits":
        return []
    deadline = time.monotonic() + timeout
    while True:
        left = job_processes(set(sb._job_uids()))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=2.0, memory_mb=256, workers=2) as box:
        yield box


@pytest.fixture(scope="module")
def full(sb):
    if sb.isolation != "namespaces+uid":
        pytest.skip("needs the namespaces+uid level (root with namespaces)")
    return sb


# --------------------------------------------------------------------------
# Results


def test_passing_job(sb):
    r = sb.run(INC, ["assert f(1) == 2", "assert f(-1) == 0"], entry_point="f")
    assert isinstance(r, ExecutionResult)
    assert (r.passed, r.status, r.test_results, r.error) == (True, "ok", [True, True], None)


def test_results_per_test_in_order(sb):
    r = sb.run(INC, ["assert f(1) == 2", "assert f(1) == 3", "assert f(2) == 3"], "f")
    assert r.test_results == [True, False, True]
    assert (r.passed, r.status) == (False, "failed")
    assert "test 2" in r.error and "expected 3, got 2" in r.error


def test_empty_tests_is_error(sb):
    r = sb.run(INC, [], "f")
    assert (r.passed, r.status, r.test_results) == (False, "error", [])


def test_syntax_error(sb):
    r = sb.run("def f(x) return x", ["assert f(1) == 2"], "f")
    assert (r.passed, r.status, r.test_results) == (False, "syntax_error", [False])
    assert "SyntaxError" in r.error


def test_invalid_test_is_error_others_still_reported(sb):
    r = sb.run(INC, ["assert f(1) == 2", "assert f(1 ==", 7], "f")
    assert r.status == "error" and r.test_results == [True, False, False]


def test_missing_entry_point(sb):
    r = sb.run("def g(x):\n    return x\n", ["assert f(1) == 1"], entry_point="f")
    assert r.status == "failed" and "entry point 'f'" in r.error


def test_module_level_exception_fails_all(sb):
    r = sb.run("raise ValueError('boom')\n" + INC, ["assert f(1) == 2", "assert f(2) == 3"], "f")
    assert (r.status, r.test_results) == ("failed", [False, False])
    assert "ValueError: boom" in r.error


def test_one_test_raising_does_not_fail_the_others(sb):
    code = "def f(x):\n    if x == 2:\n        raise KeyError(x)\n    return x\n"
    r = sb.run(code, ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"], "f")
    assert r.test_results == [True, False, True]
    # Same for assert-mode tests (several statements).
    tests = ["y = f(1)\nassert y == 1", "y = f(2)\nassert y == 2", "y = f(3)\nassert y == 3"]
    assert sb.run(code, tests, "f").test_results == [True, False, True]


def test_assert_mode_tests(sb):
    tests = ["import math\nassert math.isclose(f(0.5), 1.5)",
             "for i in range(5):\n    assert f(i) == i + 1",
             "assert [f(i) for i in range(3)] == [1, 2, 4]"]
    r = sb.run(INC, tests, "f")
    assert r.test_results == [True, True, False] and r.status == "failed"


def test_humaneval_style_check_function(sb):
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"
    assert sb.run(INC, [test + "\ncheck(f)\n"], "f").passed
    bad = "def f(x):\n    return 2 if x == 1 else 0\n"
    assert not sb.run(bad, [test + "\ncheck(f)\n"], "f").passed


def test_timeout_keeps_earlier_results(sb):
    code = "def f(x):\n    while x == 3:\n        pass\n    return x\n"
    tests = ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3", "assert f(4) == 4"]
    t = time.monotonic()
    r = sb.run(code, tests, "f", timeout_s=0.5)
    assert time.monotonic() - t < 3
    assert r.status == "timeout" and r.test_results == [True, True, False, False]
    assert "in test 3" in r.error


def test_run_batch_parallel_and_in_order(sb):
    jobs = [(f"def f():\n    return {i}\n", [f"assert f() == {i}"], "f") for i in range(40)]
    jobs[7] = ("def f():\n    return -1\n", ["assert f() == 7"], "f")
    rs = sb.run_batch(jobs)
    assert [r.passed for r in rs] == [i != 7 for i in range(40)]
    # Two sleeping jobs on two workers take about one sleep, not two.
    sleeper = ("import time\ndef f():\n    time.sleep(0.4)\n    return 1\n", ["assert f() == 1"], "f")
    t = time.monotonic()
    assert all(r.passed for r in sb.run_batch([sleeper, sleeper]))
    assert time.monotonic() - t < 0.75


def test_output_is_captured_and_capped(sb):
    r = sb.run("print('hello')\n" + INC, ["assert f(1) == 2"], "f")
    assert r.passed and r.output == "hello\n"
    r = sb.run("import sys\nsys.stdout.write('x' * 3_000_000)\n" + INC, ["assert f(1) == 2"], "f")
    assert (r.passed, r.status) == (False, "output_limit")


# --------------------------------------------------------------------------
# Strict, type-aware I/O comparison (parent side)


@pytest.mark.parametrize("code, ok", [
    ("def f():\n    return 3\n", True),
    ("def f():\n    return 3.0\n", False),            # float where an int is expected
    ("def f():\n    return True\n", False),           # bool where an int is expected
    ("class I(int):\n    pass\ndef f():\n    return I(3)\n", False),   # int subclass
])
def test_io_mode_is_type_aware(sb, code, ok):
    assert sb.run(code, ["assert f() == 3"], "f").passed is ok


def test_io_mode_float_tolerance_and_containers(sb):
    assert sb.run("def f():\n    return 0.1 + 0.2\n", ["assert f() == 0.3"], "f").passed
    assert not sb.run("def f():\n    return 0.3001\n", ["assert f() == 0.3"], "f").passed
    assert not sb.run("def f():\n    return (1, 2)\n", ["assert f() == [1, 2]"], "f").passed
    code = "def f():\n    return {'a': [1, {2, 3}], 'b': (None, b'x', 1e999)}\n"
    assert sb.run(code, ["assert f() == {'b': (None, b'x', 1e999), 'a': [1, {3, 2}]}"], "f").passed


def test_io_forms():
    assert plan_test("assert f(1, [2, 3]) == 6").kind == "io"
    assert plan_test("assert 6 == f(1, k=[2])").kind == "io"
    for t in ("assert f(1)", "assert not f(1)", "assert f(1) is None", "assert f(1) != 2",
              "assert abs(f(1) - 2) < 1e-6", "x = 1\nassert f(x) == 1", "assert f(3 * 2) == max(1, 2)",
              "for i in range(3):\n    assert f(i) == i", "import math\nassert math.isclose(f(1), 2)"):
        assert plan_test(t).kind == "io", t
    for t in ("assert f(x) == 1", "assert f(*[1]) == 1", "y = f(1)\nassert y == 1",
              "assert all(f(i) == i for i in range(3))", "assert f.__name__ == 'f'",
              "for i in range(1000):\n    assert f(i) == i", "assert f(f(1)) == 1"):
        assert plan_test(t).kind == "assert", t
    assert plan_test("assert (").kind == "invalid"


def test_parse_and_compare_units():
    assert parse_value("[1, -2.5, inf, -inf, set(), frozenset({1}), complex(1.0, -0.0)]") == \
        [1, -2.5, float("inf"), float("-inf"), set(), frozenset({1}), complex(1, 0)]
    with pytest.raises(ValueError):
        parse_value("__import__('os')")
    assert strict_equal([1, (2.0, "a")], [1, (2.0, "a")])
    assert strict_equal(3, 3.0)                        # int accepted for a float
    assert not strict_equal(True, 1) and not strict_equal(1, True)
    assert not strict_equal({1: "a"}, {True: "a"})
    assert strict_equal(float("nan"), float("nan"))


# --------------------------------------------------------------------------
# Isolation properties


def test_each_job_in_its_own_fresh_process(sb):
    code = "import os\ndef f():\n    return [os.getpid(), os.getcwd(), sorted(os.listdir('.'))]\n"
    pids = set()
    for _ in range(3):
        r = sb.run(code + "open('junk', 'w').write('x')\n", ["assert f() == 0"], "f")
        got = parse_value(r.error.split("got ", 1)[1])
        assert got[2] == ["junk"]          # only this job's file: a fresh directory
        pids.add(got[0])
        assert got[0] != os.getpid()
    # The directory is removed afterwards.
    assert not os.path.exists(got[1]) or sb.isolation == "namespaces+uid"


def test_env_scrubbed_and_stdin_closed(sb):
    os.environ["SANDBOX_TEST_SECRET"] = "s3cret"
    try:
        with Sandbox(timeout_s=2.0, workers=1) as box:
            code = "import os, sys\ndef f():\n    return [sorted(os.environ), sys.stdin.read()]\n"
            r = box.run(code, ["assert f() == 0"], "f")
        env, stdin = parse_value(r.error.split("got ", 1)[1])
        assert "SANDBOX_TEST_SECRET" not in env and set(env) <= {"PATH", "HOME", "TMPDIR", "LANG"}
        assert stdin == ""
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]


def test_unprivileged_uid(full):
    r = full.run("import os\ndef f():\n    return os.getuid()\n", ["assert f() == 0"], "f")
    assert not r.passed and "got 0" not in r.error


def test_no_network(full):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    code = textwrap.dedent(f"""
        import socket
        def f():
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.5)
                return "connected"
            except OSError:
                return "blocked"
    """)
    try:
        assert full.run(code, ["assert f() == 'blocked'"], "f").passed
        srv.settimeout(0.1)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_no_writes_outside_job_dir(full, tmp_path):
    targets = ["/tmp/sbx_escape", "/dev/shm/sbx_escape", "/var/tmp/sbx_escape",
               os.path.join(ROOT, "sbx_escape"), str(tmp_path / "sbx_escape"), "/etc/sbx_escape"]
    code = textwrap.dedent(f"""
        def f():
            wrote = []
            for p in {targets!r}:
                try:
                    with open(p, "w") as fh:
                        fh.write("x")
                    wrote.append(p)
                except OSError:
                    pass
            open("inside.txt", "w").write("ok")    # the job's own dir is writable
            return wrote
    """)
    assert full.run(code, ["assert f() == []"], "f").passed
    assert not any(os.path.exists(p) for p in targets)


def test_setsid_grandchild_is_killed(sb):
    code = textwrap.dedent("""
        import os, time
        def f():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(60)
                os._exit(0)
            time.sleep(0.1)
            return 1
    """)
    assert sb.run(code, ["assert f() == 1"], "f").passed
    assert wait_no_job_processes(sb) == []


def test_memory_limit(sb):
    code = "def f():\n    x = bytearray(600 * 1024 * 1024)\n    return 1\n"
    r = sb.run(code, ["assert f() == 1"], "f")
    assert (r.passed, r.status) == (False, "memory") and "256 MB" in r.error


def test_file_size_limit(sb):
    code = textwrap.dedent("""
        def f():
            try:
                with open("big", "wb") as fh:
                    fh.write(b"x" * (40 * 1024 * 1024))
                return "wrote"
            except OSError as e:
                return "refused"
    """)
    assert sb.run(code, ["assert f() == 'refused'"], "f").passed


def test_process_count_limit(full):
    code = textwrap.dedent("""
        import os, time
        def f():
            n = 0
            for _ in range(100):
                try:
                    if os.fork() == 0:
                        time.sleep(5)
                        os._exit(0)
                    n += 1
                except OSError:
                    break
            return n
    """)
    r = full.run(code, ["assert f() < 40"], "f")
    assert r.passed, r.error
    assert wait_no_job_processes(full) == []


def test_cannot_signal_sandbox_or_trainer(full):
    code = textwrap.dedent(f"""
        import os, signal
        def f():
            hits = []
            for pid in (1, os.getppid(), {os.getpid()}):
                try:
                    os.kill(pid, signal.SIGKILL)
                    hits.append(pid)
                except OSError:
                    pass
            return hits
    """)
    assert full.run(code, ["assert f() == []"], "f").passed
    assert full.run(INC, ["assert f(1) == 2"], "f").passed


# --------------------------------------------------------------------------
# Lifecycle


def test_worker_death_is_error_then_recovers():
    with Sandbox(timeout_s=2.0, workers=1) as box:
        assert box.run(INC, ["assert f(1) == 2"], "f").passed
        pid = box._worker_pids()[0]
        code = "import time\ndef f():\n    time.sleep(5)\n"
        import threading
        threading.Timer(0.3, os.kill, (pid, 9)).start()
        r = box.run(code, ["assert f() is None"], "f")
        assert (r.passed, r.status) == (False, "error") and "worker died" in r.error
        assert box.run(INC, ["assert f(1) == 2"], "f").passed


def test_fork_server_death_is_error_then_recovers():
    with Sandbox(timeout_s=2.0, workers=1) as box:
        assert box.run(INC, ["assert f(1) == 2"], "f").passed
        manager = box._worker_pids()[0]
        with open(f"/proc/{manager}/task/{manager}/children") as fh:
            fork_server = int(fh.read().split()[0])
        import threading
        threading.Timer(0.3, os.kill, (fork_server, 9)).start()
        r = box.run("import time\ndef f():\n    time.sleep(5)\n", ["assert f() is None"], "f")
        assert (r.passed, r.status) == (False, "error")
        assert box.run(INC, ["assert f(1) == 2"], "f").passed
        assert wait_no_job_processes(box) == []


def test_non_string_code_and_tests(sb):
    r = sb.run(None, ["assert f(1) == 2"], "f")
    assert (r.passed, r.status) == (False, "syntax_error")
    r = sb.run(b"def f(x): return x", ["assert f(1) == 1"], "f")
    assert (r.passed, r.status) == (False, "syntax_error")
    r = sb.run("def f(x):\n    return x\x00\n", ["assert f(1) == 1"], "f")
    assert (r.passed, r.status) == (False, "syntax_error")


def test_without_with_lazy_start_and_close():
    box = Sandbox(timeout_s=2.0, workers=1)
    assert box._worker_pids() == []            # nothing started yet
    assert box.run(INC, ["assert f(1) == 2"], "f").passed
    pid = box._worker_pids()[0]
    box.close()
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.parametrize("level", ["rlimits", "uid"])
def test_reduced_isolation_levels(level):
    if level == "uid" and os.geteuid() != 0:
        pytest.skip("the uid level needs root")
    import sandbox.pool as pool
    pool._warned_levels.discard(level)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Sandbox(timeout_s=0.5, workers=1, isolation=level) as box:
            assert box.isolation == level
            assert box.run(INC, ["assert f(1) == 2"], "f").passed
            r = box.run("while True:\n    pass\n", ["assert f(1) == 2"], "f")
            assert r.status == "timeout"
            code = textwrap.dedent("""
                import os, time
                def f():
                    if os.fork() == 0:
                        os.setsid()
                        if os.fork() == 0:
                            time.sleep(60)
                        os._exit(0)
                    return 1
            """)
            assert box.run(code, ["assert f() == 1"], "f").passed
            if level == "uid":
                assert wait_no_job_processes(box) == []
    assert any(level in str(w.message) for w in caught)


def test_two_processes_at_once(sb):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from sandbox import Sandbox
        with Sandbox(timeout_s=2.0, workers=1) as sb:
            rs = sb.run_batch([("def f(x):\\n    return x * 2\\n", [f"assert f({{i}}) == {{2 * i}}"], "f")
                               for i in range(200)])
            print(sum(r.passed for r in rs))
    """)
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    rs = sb.run_batch([(INC, [f"assert f({i}) == {i + 1}"], "f") for i in range(200)])
    out, _ = other.communicate(timeout=60)
    assert all(r.passed for r in rs) and out.strip() == "200"


def test_forked_child_gets_its_own_workers(sb):
    assert sb.run(INC, ["assert f(1) == 2"], "f").passed
    parent_workers = sb._worker_pids()
    pid = os.fork()
    if pid == 0:                       # e.g. a DataLoader worker
        code = 1
        try:
            ok = sb.run(INC, ["assert f(1) == 2"], "f").passed
            code = 0 if ok and set(sb._worker_pids()).isdisjoint(parent_workers) else 1
            sb.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sb._worker_pids() == parent_workers
    assert sb.run(INC, ["assert f(2) == 3"], "f").passed


def test_safe_in_a_process_with_torch_loaded():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    torch.ones(4).sum()                    # threads and torch state exist
    with Sandbox(timeout_s=2.0, workers=1) as box:
        assert box.run(INC, ["assert f(1) == 2"], "f").passed


def test_outcomes_pads_a_short_report_with_failures():
    from sandbox import ExecutionResult

    crashed = ExecutionResult(False, [True], "error", "died")
    assert crashed.outcomes(3) == [True, False, False]
    assert ExecutionResult(True, [True, True, True], "ok").outcomes(2) == [True, True]
    assert ExecutionResult(False, None, "error").outcomes(1) == [False]
