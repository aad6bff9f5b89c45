"""Hostile candidates: each must fail, leave the host unchanged, leave no
process behind, and leave the sandbox working for the next job.

Where an attack could in principle coexist with a correct answer (writing a
file, connecting to a port), the candidate only returns the expected value if
the attack succeeded, so "not passed" is the proof that it was contained.
"""

import os
import secrets
import socket
import textwrap
import time

import pytest

from sandbox import Sandbox

from test_sandbox import INC, ROOT, wait_no_job_processes

SECRET = secrets.token_hex(16)   # fresh per run: no file on disk can contain it


@pytest.fixture(scope="module")
def sb():
    os.environ["SANDBOX_HOSTILE_SECRET"] = SECRET
    try:
        with Sandbox(timeout_s=1.0, memory_mb=256, workers=2) as box:
            if box.isolation == "rlimits":
                # Jobs would run as this user: kill(-1) alone would end the run.
                pytest.skip("hostile programs need at least the uid level to be contained")
            box.run(INC, ["assert f(1) == 2"], "f")     # start the workers now
            yield box
    finally:
        del os.environ["SANDBOX_HOSTILE_SECRET"]


@pytest.fixture(scope="module")
def full(sb):
    if sb.isolation != "namespaces+uid":
        pytest.skip("needs the namespaces+uid level (root with namespaces)")
    return sb


def contained(sb, r, status=None):
    """The common assertions after a hostile job."""
    assert not r.passed, r
    if status is not None:
        assert r.status == status, r
    assert r.error, r
    assert wait_no_job_processes(sb) == []
    assert sb.run(INC, ["assert f(1) == 2", "assert f(2) == 3"], "f").passed


def run(sb, code, tests=("assert f() == 1",), timeout_s=None):
    return sb.run(textwrap.dedent(code), list(tests), "f", timeout_s=timeout_s)


# --------------------------------------------------------------------------
# Resource exhaustion


def test_infinite_loop(sb):
    t = time.monotonic()
    r = run(sb, "def f():\n    while True:\n        pass\n", timeout_s=0.5)
    assert time.monotonic() - t < 2.5
    contained(sb, r, "timeout")


def test_sleep_with_sigxcpu_ignored(sb):
    r = run(sb, """
        import signal, time
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        def f():
            time.sleep(30)
            return 1
    """, timeout_s=0.5)
    contained(sb, r, "timeout")


def test_memory_bomb(sb):
    r = run(sb, """
        def f():
            hog = []
            while True:
                hog.append("x" * (1 << 20))
    """)
    contained(sb, r, "memory")


def test_fork_bomb(sb):
    t = time.monotonic()
    r = run(sb, """
        import os
        def f():
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
    """, timeout_s=0.5)
    assert time.monotonic() - t < 5
    contained(sb, r, "timeout")


def test_gigabyte_of_output(sb):
    t = time.monotonic()
    r = run(sb, """
        import sys
        def f():
            chunk = "PASS " * 20000
            for _ in range(10000):          # 1 GB
                sys.stdout.write(chunk)
            return 1
    """)
    assert time.monotonic() - t < 3
    contained(sb, r, "output_limit")
    assert len(r.output) <= 4096


def test_recursion_bombs(sb):
    contained(sb, run(sb, "def f(n=0):\n    return f(n + 1)\n"), "failed")
    # With the recursion limit lifted, recursion through C calls overflows the
    # C stack: the job process dies with SIGSEGV.
    r = run(sb, """
        import sys
        sys.setrecursionlimit(10 ** 7)
        def f(n=0):
            return list(map(f, [n + 1]))
    """)
    contained(sb, r, "failed")
    assert "SIGSEGV" in r.error
    # Pure-Python recursion (no C stack in 3.11) grows the heap instead.
    r = run(sb, """
        import sys
        sys.setrecursionlimit(10 ** 8)
        def f(n=0):
            return f(n + 1)
    """)
    contained(sb, r)
    assert r.status in ("memory", "timeout", "failed")


def test_huge_return_value(sb):
    r = run(sb, "def f():\n    return list(range(3_000_000))\n")
    contained(sb, r)


def test_fill_the_disk_then_next_job_is_clean(sb):
    r = run(sb, """
        import os
        def f():
            try:
                for i in range(100000):
                    with open(f"f{i}", "wb") as fh:
                        fh.write(b"x" * 1_000_000)
            except OSError:
                pass
            os.mkdir("locked")
            open("locked/x", "w").write("x")
            os.chmod("locked", 0)
            return 0
    """, timeout_s=1.5)
    contained(sb, r)
    probe = "import os\ndef f():\n    return sorted(os.listdir('.'))\n"
    assert sb.run(probe, ["assert f() == []"], "f").passed


# --------------------------------------------------------------------------
# Escaping the box


def test_write_outside_job_dir(full, tmp_path):
    targets = ["/tmp/pwned", "/dev/shm/pwned", "/var/tmp/pwned", os.path.join(ROOT, "pwned"),
               str(tmp_path / "pwned"), os.path.expanduser("~/pwned"), "/usr/lib/pwned"]
    r = run(full, f"""
        def f():
            for p in {targets!r}:
                try:
                    open(p, "w").write("x")
                    return 1
                except OSError:
                    pass
            return 0
    """)
    contained(full, r)
    assert not any(os.path.exists(p) for p in targets)


def test_delete_host_files(full, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    r = run(full, f"""
        import os, shutil
        def f():
            hit = 0
            for p in ({str(victim)!r}, {os.path.join(ROOT, 'pytest.ini')!r}, "/etc/hostname"):
                try:
                    os.remove(p)
                    hit = 1
                except OSError:
                    pass
            shutil.rmtree({ROOT!r}, ignore_errors=True)
            shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)
            return hit
    """)
    contained(full, r)
    assert victim.read_text() == "keep me"
    assert os.path.exists(os.path.join(ROOT, "pytest.ini"))


def test_network_connect(full):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        r = run(full, f"""
            import socket
            def f():
                for host in ("127.0.0.1", "localhost", "::1"):
                    try:
                        socket.create_connection((host, {port}), timeout=0.3).sendall(b"hi")
                        return 1
                    except OSError:
                        pass
                return 0
        """)
        contained(full, r)
        srv.settimeout(0.05)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_kill_the_parent(sb):
    managers = sb._worker_pids()
    r = run(sb, f"""
        import os, signal
        def f():
            for pid in (os.getppid(), 1, {os.getpid()}, *{managers!r}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
            except OSError:
                pass
            os.kill(-1, signal.SIGKILL)
            return 1
    """)
    contained(sb, r)
    assert sb._worker_pids() == managers          # no worker had to be restarted


def test_daemonised_grandchild_cannot_touch_later_jobs(sb):
    r = run(sb, """
        import os, time
        def f():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    # Keep the result channel and try to answer for later jobs.
                    for _ in range(40):
                        time.sleep(0.05)
                        try:
                            msg = b"R\\t0\\t3"
                            os.write(3, len(msg).to_bytes(4, "big") + msg)
                            open("/tmp/job/late", "w").write("x")
                        except OSError:
                            pass
                os._exit(0)
            return 2
    """)
    contained(sb, r, "failed")
    # A job expecting 3 from a function returning 2 must not pick up the
    # daemon's forged "3".
    assert not sb.run("def f():\n    return 2\n", ["assert f() == 3"], "f").passed


def test_read_tests_and_answers_from_disk(full, tmp_path):
    (tmp_path / "answers.txt").write_text(SECRET)
    r = run(full, f"""
        import os
        def f():
            roots = ["/tmp", "/var/tmp", "/dev/shm", "/root", "/home", {ROOT!r},
                     {str(tmp_path)!r}, os.path.expanduser("~"), "/proc/self/cwd"]
            for root in roots:
                for d, _, files in os.walk(root):
                    for name in files:
                        try:
                            text = open(os.path.join(d, name), errors="ignore").read(1 << 20)
                        except OSError:
                            continue
                        if {SECRET!r} in text:
                            return {SECRET!r}
            return ""
    """, tests=[f"assert f() == {SECRET!r}"], timeout_s=2.0)
    contained(full, r)


def test_read_trainer_memory_and_environment(full):
    r = run(full, f"""
        def f():
            for path in ("/proc/{os.getpid()}/environ", "/proc/{os.getpid()}/mem",
                         "/proc/1/environ", "/proc/self/environ"):
                try:
                    if {SECRET!r}.encode() in open(path, "rb").read(1 << 16):
                        return 1
                except OSError:
                    pass
            return 0
    """)
    contained(full, r)


# --------------------------------------------------------------------------
# Forging the verdict


def test_sys_exit_before_tests(sb):
    contained(sb, run(sb, "import sys\nsys.exit(0)\ndef f():\n    return 1\n"), "failed")
    contained(sb, run(sb, "def f():\n    raise SystemExit(0)\n"), "failed")


def test_os_exit_before_tests(sb):
    r = run(sb, "import os\nos._exit(0)\ndef f():\n    return 1\n")
    contained(sb, r, "failed")
    r = sb.run("import os\ndef f():\n    os._exit(0)\n", ["y = f()\nassert y == 1"], "f")
    contained(sb, r, "failed")


def test_fake_pass_lines(sb):
    r = run(sb, """
        import sys
        print("passed\\nPASS\\nok\\nAll tests passed")
        sys.stderr.write("passed\\n")
        def f():
            print("passed")
            return 0
    """)
    contained(sb, r, "failed")


ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __bool__(self): return True
    def __sub__(self, other): return 0.0
    def __rsub__(self, other): return 0.0
    def __abs__(self): return 0.0
    def __hash__(self): return 0
def f(*args):
    return Anything()
"""


def test_always_equal_object(sb):
    # I/O mode, assert mode, and a HumanEval-style check function.
    tests = ["assert f(1) == 1", "assert f(1)",
             "x = f(2)\nassert x == [1, 2]", "assert abs(f(1.0) - 2.5) < 1e-6",
             "def check(candidate):\n    assert candidate(1) == 5\n\ncheck(f)\n",
             "import math\ndef check(candidate):\n    assert math.fabs(candidate(1) - 3) < 1e-9\n"
             "\ncheck(f)\n"]
    r = sb.run(ALWAYS_EQUAL, tests, "f")
    contained(sb, r, "failed")
    assert r.test_results == [False] * len(tests)


def test_int_subclass_with_lying_eq(sb):
    code = textwrap.dedent("""
        class Liar(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
            def __repr__(self): return "7"
        def f(x):
            return Liar(0)
    """)
    tests = ["assert f(1) == 7", "y = f(1)\nassert y == 7", "assert f(1) in [7]"]
    r = sb.run(code, tests, "f")
    contained(sb, r, "failed")
    assert r.test_results == [False, False, False]


def test_monkeypatch_checkers_and_builtins(sb):
    code = textwrap.dedent("""
        import math, builtins, operator
        math.isclose = lambda *a, **k: True
        operator.eq = lambda a, b: True
        builtins.abs = lambda x: 0
        builtins.isinstance = lambda *a: True
        builtins.repr = lambda x: "1.5"
        builtins.AssertionError = type("Nope", (Exception,), {})
        def f(x):
            return -1.0
    """)
    tests = ["assert f(1) == 1.5",
             "import math\nassert math.isclose(f(1), 1.5)",
             "assert abs(f(1) - 1.5) < 1e-9",
             "from math import isclose\nassert isclose(f(2), 1.5)"]
    r = sb.run(code, tests, "f")
    contained(sb, r, "failed")
    assert r.test_results == [False] * 4


def test_monkeypatch_what_the_harness_uses(sb):
    # Builtins and module attributes the job-side harness calls after the
    # candidate's code has run: it must use its own references.
    code = textwrap.dedent("""
        import builtins, os, types
        real_enumerate, real_write = builtins.enumerate, os.write
        def shifted(it, start=0):        # report unit i's outcome under another index
            items = list(it)
            return ((len(items) - 1 - i, x) for i, x in real_enumerate(items))
        builtins.enumerate = shifted
        builtins.all = lambda it: True
        builtins.dict = lambda *a, **k: {"abs": lambda x: 0}
        types.ModuleType = lambda name: types
        os.write = lambda fd, data: real_write(fd, data.replace(b"F\\t", b"P\\t"))
        class Anything:
            def __eq__(self, other): return True
        def f():
            return [Anything()]
    """)
    tests = ["assert True", "y = f()\nassert y == [1]", "import math\nassert math.fabs(-2) == 2"]
    r = sb.run(code, tests, "f")
    contained(sb, r, "failed")
    assert r.test_results == [True, False, True]


def test_trace_function_rewriting_guard_locals(sb):
    code = textwrap.dedent("""
        import sys
        def tracer(frame, event, arg):
            if event == "call" and "op" in frame.f_code.co_varnames:
                frame.f_locals["op"] = "is"
                frame.f_locals["b"] = frame.f_locals.get("a")
                sys.settrace(None)       # leave no trace behind
                return None
            return tracer
        def f(x):
            sys.settrace(tracer)
            return 0
    """)
    r = sb.run(code, ["y = f(1)\nassert y == 5"], "f")
    contained(sb, r, "failed")


def test_background_thread_repatching(sb):
    code = textwrap.dedent("""
        import math, threading, time
        def patch():
            while True:
                math.isclose = lambda *a, **k: True
                time.sleep(0.001)
        threading.Thread(target=patch, daemon=True).start()
        def f():
            return 0.0
    """)
    r = sb.run(code, ["import math\nassert math.isclose(f(), 2.0)"], "f")
    contained(sb, r, "failed")


def test_frame_introspection_for_harness_secrets(sb):
    code = textwrap.dedent("""
        import sys, gc, re, os
        HEX = re.compile(r"^[0-9a-f]{32}$")
        def forge():
            found = set()
            frame = sys._getframe()
            while frame is not None:
                for scope in (frame.f_locals, frame.f_globals):
                    for v in list(scope.values()):
                        if isinstance(v, str) and HEX.match(v):
                            found.add(v)
                        if isinstance(v, list):
                            v.append("passed")
                        if isinstance(v, dict):
                            for k in list(v):
                                if isinstance(v[k], str) and HEX.match(v[k]):
                                    found.add(v[k])
                frame = frame.f_back
            for obj in gc.get_objects():
                if isinstance(obj, dict):
                    for x in list(obj.values())[:50]:
                        if isinstance(x, str) and HEX.match(x):
                            found.add(x)
            for i in range(4):
                for m in found:
                    for tag in ("P", "END"):
                        msg = f"{tag}\\t{i if tag == 'P' else -1}\\t{m}".encode()
                        os.write(3, len(msg).to_bytes(4, "big") + msg)
        forge()
        def f(x):
            forge()
            return None
    """)
    tests = ["y = f(1)\nassert y == 2", "assert f(1) == 2",
             "def check(candidate):\n    r = candidate(3)\n    assert r == 4\n\ncheck(f)\n"]
    r = sb.run(code, tests, "f")
    contained(sb, r, "failed")
    assert r.test_results == [False, False, False]


def test_forged_result_records(sb):
    code = textwrap.dedent("""
        import os
        def send(tag, i, text):
            msg = f"{tag}\\t{i}\\t{text}".encode()
            os.write(3, len(msg).to_bytes(4, "big") + msg)
        send("R", 0, "1")
        send("P", 1, "0" * 32)
        send("END", -1, "0" * 32)
        def f():
            return 0
    """)
    r = sb.run(code, ["assert f() == 1", "y = f()\nassert y == 1"], "f")
    contained(sb, r, "failed")
    # Garbage on the channel.
    r = run(sb, "import os\nos.write(3, b'\\xff' * 64)\ndef f():\n    return 1\n")
    contained(sb, r)
    r = run(sb, "import os\nos.close(3)\ndef f():\n    return 1\n")
    contained(sb, r)


def test_stop_itself(sb):
    r = run(sb, "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGSTOP)\n"
                "    return 1\n", timeout_s=0.5)
    contained(sb, r, "timeout")


def test_hostile_exception(sb):
    r = run(sb, """
        class Evil(Exception):
            def __str__(self):
                while True:
                    pass
        def f():
            raise Evil()
    """, timeout_s=0.5)
    contained(sb, r, "timeout")
    r = run(sb, """
        class Evil(BaseException):
            def __str__(self):
                raise Evil()
        def f():
            raise Evil()
    """)
    contained(sb, r, "failed")


def test_remove_own_job_dir(sb):
    r = run(sb, "import os, shutil\ndef f():\n    d = os.getcwd()\n    os.chdir('/')\n"
                "    shutil.rmtree(d)\n    return 0\n")
    contained(sb, r, "failed")


# --------------------------------------------------------------------------
# Forged pass records from code that walks the job's own memory (gc). They
# reach the harness's reporters and secrets, so they can only ever count for
# assert-mode tests, which results mark forgeable.

FORGERS = {
    "reporter closures": """
        import gc, os
        def f(*args, **kwargs):
            return None
        fns = {o.__name__: o for o in gc.get_objects()
               if type(o).__name__ == "function" and o.__name__ in ("report_pass", "report_end")}
        fns["report_pass"](0)
        fns["report_end"]()
        os._exit(0)
    """,
    "secrets from closure cells": """
        import gc, os, sys
        def f(*args, **kwargs):
            return None
        send = sys.modules["sandbox.harness"]._send
        for o in gc.get_objects():
            if type(o).__name__ == "function" and o.__name__ in ("report_pass", "report_end"):
                for cell in o.__closure__:
                    v = cell.cell_contents
                    if type(v) is dict:
                        for i, marker in list(v.items()) or [(0, "0" * 32)]:
                            send("P", i, marker)
                    elif type(v) is str:
                        end = v
        send("END", -1, end)
        os._exit(0)
    """,
    "raw frames at call time": """
        import gc, os
        def f(*args, **kwargs):
            for o in gc.get_objects():
                if type(o).__name__ == "function" and o.__name__ == "report_pass":
                    for cell in o.__closure__:
                        if type(cell.cell_contents) is dict:
                            for i, m in list(cell.cell_contents.items()) or [(0, "0" * 32)]:
                                msg = f"P\\t{i}\\t{m}".encode()
                                os.write(3, len(msg).to_bytes(4, "big") + msg)
                if type(o).__name__ == "function" and o.__name__ == "report_end":
                    o()
            os._exit(0)
    """,
}

UNFORGEABLE_TESTS = [
    "assert f(1) == 2",
    "assert f(1) == max(2, 0)",
    "assert f(3 * 2) == sorted([12])[0]",
    "assert abs(f(1) - 2) < 1e-9",
    "assert f(2) == f(1) + 2",
    "assert 2 in [f(1), 0]",
    "def check(candidate):\n    xs = list(range(2))\n    assert candidate(xs) == [0, 1, 0, 1]\n"
    "    for i in range(2):\n        assert candidate(i) == 2 * i\n\ncheck(f)\n",
]


@pytest.mark.parametrize("forger", sorted(FORGERS))
def test_gc_forged_passes_never_count_outside_assert_mode(sb, forger):
    code = textwrap.dedent(FORGERS[forger])
    for test in UNFORGEABLE_TESTS:
        r = sb.run(code, [test], "f")
        assert r.forgeable == [False], test
        contained(sb, r, "failed")
    # The attack is real: an assert-mode test (here, a call per iteration of
    # a comprehension) is forged, and the result says it is forgeable.
    r = sb.run(code, ["assert all(f(i) == 2 * i for i in [1, 2])"], "f")
    assert r.forgeable == [True]
    assert r.passed, r
