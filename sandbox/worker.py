"""A sandbox worker: the manager process, which drives one fork-server.

The trainer starts each manager as a fresh interpreter (``python -I -S -c
...``), never by forking itself, so no trainer memory or thread is inherited;
the manager in turn starts the fork-server as another fresh interpreter::

    trainer ─pipes─> manager (root, trusted) ─SCM_RIGHTS─> fork-server ─fork─> job
                       classifies tests, holds      never sees job       unprivileged,
                       expected values, compares,   content: its memory  one process
                       enforces deadline and caps   stays clean          per job
                       └──────────── job socket + output pipe ─────────────┘

Per job the manager creates the job directory, a socket pair (job description
in, result records out) and an output pipe (stdout/stderr, capped), and passes
one end of each to the fork-server, which forks the job process, waits for it
and kills whatever it left behind. At the deadline, or when output exceeds its
cap, the manager sends the fork-server SIGUSR1 to kill the job.

At the ``namespaces+uid`` level the fork-server is PID 1 of a PID namespace of
its own, so ``kill(-1, SIGKILL)`` from it reaches every process a job started
(including a ``setsid()`` daemon) and nothing else; network, mount, IPC and UTS
namespaces are set up once per worker, shared by its jobs (a network namespace
per job would cost milliseconds, see docs/sandbox.md).
"""

from __future__ import annotations

import hmac
import json
import marshal
import math
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from . import checks, harness, isolation
from .zygote import DONE as _DONE
from .protocol import FrameReader, ProtocolError, pack, read_frame, write_all

MAX_RESULT_BYTES = 4 << 20     # result records per job (the manager parses them)
OUTPUT_HEAD_BYTES = 2048       # stdout/stderr kept for ExecutionResult.output
ZYGOTE_GRACE_S = 10.0          # fork-server must report a killed job within this
_PLAN_CACHE_MAX = 20_000



class WorkerBroken(Exception):
    """The fork-server died or stopped answering; the manager must exit."""


# --------------------------------------------------------------------------
# Manager

class JobState:
    """What the manager learns about one job while it runs."""

    def __init__(self, units: list, calls: dict, markers: dict, end_marker: str):
        self.units = units
        self.calls = calls            # unit index -> IoCall
        self.markers = markers        # unit index -> secret
        self.end_marker = end_marker
        self.unit_res: list = [None] * len(units)
        self.values: dict = {}        # unit index -> parsed value ("value" calls, clean jobs)
        self.unsupported: set = set()  # clean-job units whose value is not plain
        self.syntax_error: str | None = None
        self.exec_error: str | None = None
        self.end_ok = False
        self.tamper: str | None = None
        self.memory = False

    def record(self, raw: bytes) -> None:
        parts = raw.decode("utf-8", "replace").split("\t", 2)
        if len(parts) != 3:
            self.tamper = "malformed result record"
            return
        tag, idx_text, text = parts
        if text.startswith("MemoryError") or "raised MemoryError" in text[:40]:
            self.memory = True
        if tag == "S":
            self.syntax_error = text
            return
        if tag == "X":
            self.exec_error = text
            return
        if tag == "END":
            if hmac.compare_digest(text.encode(), self.end_marker.encode()):
                self.end_ok = True
            else:
                self.tamper = "forged end-of-job record"
            return
        try:
            i = int(idx_text)
        except ValueError:
            self.tamper = "malformed result record"
            return
        if not 0 <= i < len(self.units):
            self.tamper = "result record for an unknown test"
            return
        if self.unit_res[i] is not None:
            self.unit_res[i] = (False, "more than one result for the same test (forged)")
            return
        kind = self.units[i][0]
        if tag == "R" and (kind == "e" or (kind == "i" and self.calls[i].expect == "value")):
            try:
                self.values[i] = checks.parse_value(text)
                self.unit_res[i] = (True, "")
            except checks.ValueParseError as e:
                self.unit_res[i] = (False, str(e))
        elif tag == "R" and kind == "i":
            self.unit_res[i] = checks.check_call(self.calls[i], text)
        elif tag == "E":
            self.unit_res[i] = (False, f"{self.calls[i].source}: {text}" if kind == "i" else text)
        elif tag == "U" and kind == "e":
            self.unsupported.add(i)
            self.unit_res[i] = (False, text)
        elif tag == "P" and kind == "a":
            ok = hmac.compare_digest(text.encode(), self.markers[i].encode())
            self.unit_res[i] = (True, "") if ok else (False, "wrong pass marker (forged)")
        elif tag == "F" and kind == "a":
            self.unit_res[i] = (False, text)
        else:
            self.unit_res[i] = (False, "result record of the wrong kind (forged)")


def remove_tree(path: str) -> None:
    """rm -rf that also gets through directories the job made unreadable."""
    try:
        os.rmdir(path)          # the common case: the job left nothing
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        os.chmod(path, 0o700)
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                remove_tree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "job process did not report"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"job process killed by {name}"
    return f"job process exited with status {code}"


class Manager:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.plan_cache: dict = {}
        self.verdict_cache: dict = {}
        self.notes: list[str] = []
        self.level = isolation.LEVEL_RLIMITS
        self.uid = isolation.UID_BASE + os.getpid()
        self.base_dir = ""
        self.ctrl: socket.socket | None = None
        self.zygote: subprocess.Popen | None = None
        self.tmp_base: str | None = None
        self.jobdir = ""
        self.drop_uid = False

    # ---- start-up -------------------------------------------------------
    def start(self) -> None:
        """Pick the strongest isolation level available and start the fork-server."""
        requested = self.cfg["isolation"]
        uid_ok = requested != isolation.LEVEL_RLIMITS and isolation.can_drop_uid(self.uid)
        if not uid_ok and requested != isolation.LEVEL_RLIMITS:
            self.notes.append("cannot switch to an unprivileged uid (not root?)")
        in_ns = pid_ns = False
        if uid_ok and requested in ("auto", isolation.LEVEL_NAMESPACES):
            try:
                isolation.enter_namespaces()
                in_ns = True
                # Processes this manager starts from now on (the fork-server
                # first, so it becomes PID 1) live in a new PID namespace.
                isolation.unshare(isolation.CLONE_NEWPID)
                pid_ns = True
            except OSError as e:
                self.notes.append(f"namespaces unavailable ({e})")
        drop_uid = requested != isolation.LEVEL_RLIMITS and uid_ok
        # The fork-server starts before the filesystem is re-arranged, while
        # the project tree (holding this package) is still visible to it.
        self.start_fork_server({"uid": self.uid, "drop_uid": drop_uid, "in_pid_ns": pid_ns})
        base = None
        if in_ns and pid_ns:
            try:
                hide = [self.cfg["project_root"], os.path.expanduser("~")] + self.cfg["hide_paths"]
                base = isolation.lay_out_filesystem(self.cfg["tmpfs_mb"], hide,
                                                    self.cfg["allow_site_packages"])
                self.mount_proc()
                self.level = isolation.LEVEL_NAMESPACES
            except OSError as e:
                self.notes.append(f"filesystem isolation failed ({e})")
                base = None
        if self.level != isolation.LEVEL_NAMESPACES:
            self.level = isolation.LEVEL_UID if drop_uid else isolation.LEVEL_RLIMITS
            if drop_uid and not isolation.python_readable_by_others():
                self.notes.append("the Python installation is not readable by other users, "
                                  "so jobs can import only the modules the fork-server "
                                  "pre-imports")
        if base is None:
            base = tempfile.mkdtemp(prefix="sandbox-")
            self.tmp_base = base
            # A job under its own uid must traverse (not list) the base dir.
            os.chmod(base, 0o711)
        self.jobdir = os.path.join(base, "job")
        self.drop_uid = drop_uid
        self.ctrl.send(b"C" + json.dumps({"jobdir": self.jobdir}).encode())

    def mount_proc(self) -> None:
        # /proc must be mounted by a process inside the PID namespace; a child
        # of this manager is (the fork-server is PID 1, this helper PID 2+).
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                isolation.mount_namespace_proc()
                code = 0
            except BaseException:  # report through the exit status only
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError("could not mount /proc for the worker's PID namespace")

    def start_fork_server(self, zcfg: dict) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        in_pid_ns = zcfg["in_pid_ns"]

        def before_exec():
            # Runs in the forked child before exec (safe: the manager has one
            # thread). Die with the manager; never gain privileges through a
            # setuid binary (inherited by every job); at the reduced levels,
            # become the subreaper that inherits the jobs' orphans.
            isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
            isolation.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)
            if not in_pid_ns:
                isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)

        flags = ["-I", "-B"] + ([] if self.cfg["allow_site_packages"] else ["-S"])
        boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from sandbox.zygote import main; main()")
        # The jobs' environment, set once here rather than in every job (each
        # environ change in a forked job costs page faults). HOME and TMPDIR
        # follow when the job directory is known.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.zygote = subprocess.Popen(
            [sys.executable, *flags, "-c", boot, self.cfg["project_root"],
             str(child.fileno()), json.dumps(zcfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(child.fileno(),), cwd="/", env=env, preexec_fn=before_exec)
        child.close()
        self.ctrl = parent
        parent.settimeout(60)
        try:
            msg = parent.recv(1024)
        except OSError as e:
            raise WorkerBroken(f"fork-server did not start: {e}") from e
        parent.settimeout(None)
        if msg[:1] != b"R":
            raise WorkerBroken("fork-server failed to start")

    # ---- jobs -----------------------------------------------------------
    def plan(self, test, entry: str | None) -> checks.TestPlan:
        """The test's plan, its free expressions computed (once per test and entry point)."""
        if not isinstance(test, str):
            return checks.plan_test(test)
        key = (test, entry)
        p = self.plan_cache.get(key)
        if p is None:
            if len(self.plan_cache) > _PLAN_CACHE_MAX:
                self.plan_cache.clear()
            p = checks.plan_test(test, entry)
            if p.prep:
                p = checks.resolve(p, self.evaluate_clean([(e, {}) for e in p.prep]))
            self.plan_cache[key] = p
        return p

    def evaluate_clean(self, exprs: list) -> list:
        """Evaluate (CleanExpr, bindings) pairs in a clean job: one that runs no candidate code.

        Returns ("ok", value), ("raised", why) or ("unsupported", why) per
        expression. Values cross into the job by marshal and back through the
        job's serializer and checks.parse_value, as a candidate's results do.
        """
        units = [("e", e.code, bindings, e.modules, e.truth) for e, bindings in exprs]
        state = JobState(units, {}, {}, secrets.token_hex(16))
        timeout = float(self.cfg["timeout_s"])
        killed, status, _, _ = self.execute(pack(marshal.dumps({
            "code": "", "entry": None, "units": units, "end": state.end_marker,
            "limits": self.job_limits(timeout)})), state, timeout)
        cut_short = killed or ("memory limit exceeded" if state.memory else _describe_exit(status))
        out = []
        for i in range(len(units)):
            if i in state.values:
                out.append(("ok", state.values[i]))
            elif i in state.unsupported:
                out.append(("unsupported", state.unit_res[i][1]))
            elif state.unit_res[i] is not None:
                out.append(("raised", state.unit_res[i][1]))
            else:
                out.append(("raised", f"nothing ({cut_short})"))
        return out

    def job_limits(self, timeout: float) -> dict:
        return {"memory_mb": self.cfg["memory_mb"], "cpu_s": math.ceil(timeout) + 1,
                "file_mb": self.cfg["max_file_mb"], "max_procs": self.cfg["max_procs"]}

    def judge(self, plans: list, owner: list, state: JobState, entry: str | None) -> list:
        """Per test, (passed, why) from its Verdicts, or None for a test without any.

        A test's verdicts are decided once all its calls have reported: one
        clean job per test evaluates them with the returned values bound, so
        one test's expressions never share a process with another's. A call
        that raised, or returned a value that is not plain, is left unbound:
        the assert fails if it uses it (not if `or` skips it).
        """
        judged = [None] * len(plans)
        for k, p in enumerate(plans):
            if not p.verdicts or any(state.unit_res[u] is None for u in owner[k]):
                continue
            base = owner[k][0]        # a plan's calls are consecutive units
            direct = [u for c, u in zip(p.calls, owner[k]) if c.expect != "value"]
            if not all(state.unit_res[u][0] for u in direct):
                continue              # a direct check already failed the test
            exprs = [(v.expr, {checks.value_name(j): state.values[base + c]
                               for j, c in enumerate(v.calls) if base + c in state.values})
                     for v in p.verdicts]
            key = (p.source, entry, marshal.dumps([sorted(b.items()) for _, b in exprs]))
            outcomes = self.verdict_cache.get(key)
            if outcomes is None:
                if len(self.verdict_cache) > _PLAN_CACHE_MAX:
                    self.verdict_cache.clear()
                outcomes = self.verdict_cache[key] = self.evaluate_clean(exprs)
            judged[k] = (True, "")
            for v, (status, got), (_, bound) in zip(p.verdicts, outcomes, exprs):
                if status == "ok" and got is True:
                    continue
                missing = [state.unit_res[base + c][1] for j, c in enumerate(v.calls)
                           if checks.value_name(j) not in bound]
                if status == "raised" and missing:
                    why = missing[0]          # the assert used a call that raised
                elif status == "ok":
                    shown = ", ".join(f"{p.calls[c].func}(...) = {checks.short_repr(bound[checks.value_name(j)])}"
                                      for j, c in enumerate(v.calls) if checks.value_name(j) in bound)
                    why = f"{v.source}: false with {shown}"
                else:
                    why = f"{v.source}: {got}"
                judged[k] = (False, why)
                break
        return judged

    def handle(self, req: dict) -> dict:
        t0 = time.monotonic()
        tests = req.get("tests") or []
        timeout = float(req.get("timeout_s") or self.cfg["timeout_s"])
        if not tests:
            return _result("error", [], "no tests given: nothing to verify", t0)
        code = req.get("code")
        if not isinstance(code, str):
            return _result("syntax_error", [False] * len(tests),
                           f"code is a {type(code).__name__}, not a string", t0)
        if len(code) > self.cfg["max_code_chars"]:
            return _result("failed", [False] * len(tests),
                           f"code longer than {self.cfg['max_code_chars']} characters", t0)

        entry = req.get("entry_point") or None
        plans = [self.plan(t, entry) for t in tests]
        if all(p.kind == "invalid" for p in plans):
            return _result("error", [False] * len(tests),
                           "no valid test: " + plans[0].reason, t0)
        units, calls, markers, owner = [], {}, {}, []
        for k, p in enumerate(plans):
            mine = []
            if p.kind == "io":
                for c in p.calls:
                    calls[len(units)] = c
                    mine.append(len(units))
                    units.append(("i", c.func, c.args, c.kwargs, c.wrap))
            elif p.kind == "assert":
                markers[len(units)] = secrets.token_hex(16)
                mine.append(len(units))
                units.append(("a", p.code, markers[len(units)]))
            owner.append(mine)

        state = JobState(units, calls, markers, secrets.token_hex(16))
        payload = marshal.dumps({
            "code": code, "entry": entry, "units": units, "end": state.end_marker,
            "limits": self.job_limits(timeout)})
        killed, status, out_head, out_total = self.execute(pack(payload), state, timeout)
        judged = self.judge(plans, owner, state, entry)
        resp = self.verdict(plans, owner, judged, state, killed, status, out_head, out_total,
                            timeout, t0)
        resp["forgeable"] = [p.forgeable for p in plans]
        return resp

    def label(self, req: dict) -> dict:
        """Run trusted code (a reference solution) on each test's call and put its result in the test.

        A test labels when it checks exactly one call of the entry point
        (`assert f(args) == guess`, `assert f(args)`, ...). Per test the
        answer holds `call` (the call with its arguments evaluated, the same
        text for `f(6)` and `f(2*3)`), `test` (`assert f(args) == <what the
        code returned>`), `agrees` (the test as written passes on the code)
        and `error` (why there is no `test`: not a single call, the code
        raised or timed out, a result with no literal form).
        """
        t0 = time.monotonic()
        tests = req.get("tests") or []
        code, entry = req.get("code"), req.get("entry_point") or None
        timeout = float(req.get("timeout_s") or self.cfg["timeout_s"])
        answers = [{"call": None, "test": None, "agrees": False, "error": ""} for _ in tests]
        units, calls, owner = [], {}, []
        for k, t in enumerate(tests):
            call = checks.single_call(self.plan(t, entry), entry)
            if call is None:
                answers[k]["error"] = f"not a single call of {entry or 'the function'} with plain arguments"
                continue
            answers[k]["call"] = checks.call_key(call)
            owner.append((k, len(units)))
            for c in (replace(call, expect="value", value=None, wrap="", fallback=None), call):
                calls[len(units)] = c
                units.append(("i", c.func, c.args, c.kwargs, c.wrap))
        if units and isinstance(code, str) and len(code) <= self.cfg["max_code_chars"]:
            state = JobState(units, calls, {}, secrets.token_hex(16))
            killed, status, _, _ = self.execute(pack(marshal.dumps({
                "code": code, "entry": entry, "units": units, "end": state.end_marker,
                "limits": self.job_limits(timeout)})), state, timeout)
            cut_short = killed or state.syntax_error or state.exec_error or _describe_exit(status)
            for k, u in owner:
                got = state.unit_res[u]
                if u in state.values:
                    answers[k]["test"] = checks.labelled_test(calls[u + 1], state.values[u])
                    answers[k]["error"] = "" if answers[k]["test"] else "the result has no literal form"
                    answers[k]["agrees"] = bool(state.unit_res[u + 1] and state.unit_res[u + 1][0])
                else:
                    answers[k]["error"] = _short(got[1] if got else f"no result ({cut_short})")
        elif units:
            for k, _ in owner:
                answers[k]["error"] = "no code to label with"
        return {"labels": answers, "duration_s": time.monotonic() - t0}

    def execute(self, payload: bytes, state: JobState, timeout: float):
        """Run one job through the fork-server; returns what happened."""
        # The job directory is made (and removed) here rather than in the
        # fork-server, whose every write after a fork costs a page fault.
        os.mkdir(self.jobdir, 0o700)
        if self.drop_uid:
            os.chown(self.jobdir, self.uid, self.uid)
        res_m, res_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        try:
            socket.send_fds(self.ctrl, [b"J"], [res_c.fileno(), out_w])
        except OSError as e:
            raise WorkerBroken(f"fork-server unreachable: {e}") from e
        finally:
            res_c.close()
            os.close(out_w)
        deadline = time.monotonic() + timeout
        res_m.setblocking(False)
        os.set_blocking(out_r, False)
        res_fd, ctrl_fd = res_m.fileno(), self.ctrl.fileno()
        pending = memoryview(payload)
        reader = FrameReader(MAX_RESULT_BYTES)
        out_head, out_total = bytearray(), 0
        max_out = self.cfg["max_output_bytes"]
        killed: str | None = None
        kill_time = 0.0
        status = None
        open_fds = {res_fd, out_r}

        poller = select.poll()
        poller.register(res_fd, select.POLLIN | select.POLLOUT)
        poller.register(out_r, select.POLLIN)
        poller.register(ctrl_fd, select.POLLIN)

        def kill(reason):
            nonlocal killed, kill_time
            if killed is None:
                killed, kill_time = reason, time.monotonic()
                try:
                    os.kill(self.zygote.pid, signal.SIGUSR1)
                except OSError as e:
                    raise WorkerBroken(f"fork-server unreachable: {e}") from e

        def read_results():
            try:
                data = res_m.recv(1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                return False
            try:
                for frame in reader.feed(data):
                    state.record(frame)
            except ProtocolError:
                kill("result_limit")
                return False
            return True

        def read_output():
            nonlocal out_total
            try:
                data = os.read(out_r, 1 << 16)
            except BlockingIOError:
                return True
            if not data:
                return False
            out_total += len(data)
            if len(out_head) < OUTPUT_HEAD_BYTES:
                out_head.extend(data[: OUTPUT_HEAD_BYTES - len(out_head)])
            if out_total > max_out:
                kill("output_limit")
            return True

        try:
            while status is None:
                now = time.monotonic()
                if killed is None:
                    if now >= deadline:
                        kill("timeout")
                        wait_ms = ZYGOTE_GRACE_S * 1000
                    else:
                        wait_ms = (deadline - now) * 1000 + 1
                else:
                    wait_ms = (kill_time + ZYGOTE_GRACE_S - now) * 1000
                    if wait_ms <= 0:
                        raise WorkerBroken("fork-server did not stop a job in time")
                for fd, ev in poller.poll(wait_ms):
                    if fd == res_fd:
                        if ev & select.POLLOUT and pending:
                            try:
                                pending = pending[res_m.send(pending):]
                            except (BlockingIOError, InterruptedError):
                                pass
                            except OSError:
                                pending = pending[:0]
                            if not pending:
                                poller.modify(res_fd, select.POLLIN)
                        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                            if not read_results():
                                poller.unregister(res_fd)
                                open_fds.discard(res_fd)
                    elif fd == out_r:
                        if not read_output():
                            poller.unregister(out_r)
                            open_fds.discard(out_r)
                    elif fd == ctrl_fd:
                        msg = self.ctrl.recv(64)
                        if not msg:
                            raise WorkerBroken("fork-server died")
                        if msg[:1] == b"D":
                            (status,) = _DONE.unpack(msg[1:5])
            # The job and everything it started are dead: drain what they wrote
            # (the reads are non-blocking: nothing left means done).
            while res_fd in open_fds and killed != "result_limit":
                before = reader.total
                if not read_results() or reader.total == before:
                    break
            while out_r in open_fds and out_total <= max_out:
                before = out_total
                if not read_output() or out_total == before:
                    break
        finally:
            res_m.close()
            os.close(out_r)
            if status is not None:      # the job and all it started are dead
                remove_tree(self.jobdir)
        return killed, status, bytes(out_head), out_total

    def verdict(self, plans, owner, judged, state: JobState, killed, status, out_head,
                out_total, timeout, t0) -> dict:
        n = len(plans)
        exit_desc = _describe_exit(status)
        exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
        output = out_head.decode("utf-8", "replace")
        if state.syntax_error is not None and killed is None:
            return _result("syntax_error", [False] * n, state.syntax_error, t0, output)

        results, reasons, first_missing = [], [], None
        for k, p in enumerate(plans):
            if p.kind == "invalid":
                results.append(False)
                reasons.append(p.reason)
                continue
            ok, why = True, ""
            for j, u in enumerate(owner[k]):
                r = state.unit_res[u]
                if r is None:
                    ok, why = False, "no result"
                    if first_missing is None:
                        first_missing = k
                    break
                # a call whose value only a verdict uses: the verdict decides (judge())
                if not r[0] and not (p.kind == "io" and p.calls[j].expect == "value"):
                    ok, why = False, r[1]
                    break
            if ok and p.verdicts:
                ok, why = judged[k] or (False, "no verdict")
            results.append(ok)
            reasons.append(why)

        def first_failure():
            for k, (ok, why) in enumerate(zip(results, reasons)):
                if not ok:
                    return f"test {k + 1}: {why}"
            return ""

        where = f" (in test {first_missing + 1})" if first_missing is not None else ""
        if killed == "timeout":
            return _result("timeout", results, f"timed out after {timeout:g} s{where}", t0, output)
        if killed == "output_limit":
            return _result("output_limit", results,
                           f"stdout/stderr exceeded {self.cfg['max_output_bytes']} bytes", t0,
                           output)
        if killed == "result_limit":
            return _result("output_limit", results,
                           f"results exceeded {MAX_RESULT_BYTES} bytes", t0, output)
        if state.memory or exit_code == harness.EXIT_MEMORY:
            return _result("memory", results,
                           f"memory limit of {self.cfg['memory_mb']} MB exceeded "
                           f"({_short(state.exec_error or first_failure(), 150)})", t0, output)
        if exit_code == -signal.SIGXCPU:
            return _result("timeout", results, "CPU time limit exceeded", t0, output)
        invalid = [k for k, p in enumerate(plans) if p.kind == "invalid"]
        if invalid:
            return _result("error", results, f"test {invalid[0] + 1}: {plans[invalid[0]].reason}",
                           t0, output)
        if state.exec_error is not None:
            return _result("failed", [False] * n, _short(state.exec_error), t0, output)
        if state.tamper is not None:
            return _result("failed", [False] * n, f"result channel tampered with: {state.tamper}",
                           t0, output)
        if all(results) and state.end_ok and exit_code == 0:
            return _result("ok", results, None, t0, output)
        if not all(results) and first_missing is None:
            return _result("failed", results, _short(first_failure()), t0, output)
        if not state.end_ok:
            return _result("failed", results,
                           f"{exit_desc} before the tests finished{where}", t0, output)
        return _result("failed", results, _short(first_failure() or exit_desc), t0, output)

    # ---- main loop -------------------------------------------------------
    def serve(self, proto_in: int, proto_out: int) -> None:
        while True:
            raw = read_frame(proto_in)
            if raw is None:
                return
            req = json.loads(raw)
            try:
                resp = self.label(req) if req.get("op") == "label" else self.handle(req)
            except WorkerBroken as e:
                write_all(proto_out, pack(json.dumps(
                    {"fatal": str(e)}).encode()))
                raise
            write_all(proto_out, pack(json.dumps(resp).encode()))


def _result(status, results, error, t0, output="") -> dict:
    return {"status": status, "test_results": results, "error": error,
            "duration_s": time.monotonic() - t0, "output": output}


def main() -> None:
    """Entry point of ``python -I -c 'from sandbox.worker import main; main()' CONFIG``."""
    cfg = json.loads(sys.argv[1])
    # The protocol pipes move off fds 0/1, which point at /dev/null from now
    # on: nothing forked from here may write into the protocol by accident.
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    cfg["_proto_in"], cfg["_proto_out"] = proto_in, proto_out
    manager = Manager(cfg)
    try:
        manager.start()
    except (OSError, WorkerBroken, subprocess.SubprocessError) as e:
        write_all(proto_out, pack(json.dumps({"fatal": f"worker start failed: {e}"}).encode()))
        sys.exit(1)
    write_all(proto_out, pack(json.dumps(
        {"hello": True, "isolation": manager.level, "notes": manager.notes,
         "uid": manager.uid if manager.level != isolation.LEVEL_RLIMITS else os.getuid(),
         "pid": os.getpid()}).encode()))
    try:
        manager.serve(proto_in, proto_out)
    except WorkerBroken:
        sys.exit(1)
    finally:
        # The fork-server dies with us (PR_SET_PDEATHSIG); remove the job base
        # dir of the reduced levels (the namespace level's is a tmpfs).
        if manager.tmp_base:
            import shutil
            shutil.rmtree(manager.tmp_base, ignore_errors=True)
