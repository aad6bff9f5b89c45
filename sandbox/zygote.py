"""The fork-server: a small, clean interpreter that forks one process per job.

Started by the worker manager as ``python -I -S -c ...`` (a fresh interpreter,
not a fork of the manager), with the jobs' environment already in place. It
imports the harness and a few stdlib modules once, freezes the heap, and then
only ever:

1. receives a job request (two file descriptors, nothing of the job's content:
   its memory, which every job inherits, never holds code, tests or answers),
2. forks the job process (the manager has created its directory),
3. waits for it, or kills it when the manager sends SIGUSR1,
4. kills and reaps everything the job left behind,
5. reports the wait status.

Every page this process writes after a fork is copy-on-write shared with the
job and faults, so the per-job path is kept to those few calls.

Keeping this process small matters: fork cost and the page faults a job takes
grow with it (see docs/sandbox.md).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import struct
import sys
import time

from . import harness, limits

DONE = struct.Struct(">i")


class ForkServer:
    def __init__(self, ctrl: socket.socket, zcfg: dict):
        self.ctrl = ctrl
        self.zcfg = zcfg
        self.in_pid_ns = zcfg["in_pid_ns"]
        self.current = 0          # pid of the running job, 0 between jobs
        self.kill_requested = False
        # The manager asks for a kill with SIGUSR1: it interrupts waitpid()
        # below, costs nothing per job, and needs no poll set-up per job.
        signal.signal(signal.SIGUSR1, self._on_kill_request)

    def _on_kill_request(self, signum, frame) -> None:
        self.kill_requested = True
        if self.current:
            self.kill_job(self.current)

    def configure(self, cfg: dict) -> None:
        """Late settings from the manager, known once the filesystem is laid out."""
        self.zcfg["jobdir"] = cfg["jobdir"]
        # Set once here; a job inherits them without touching environ.
        os.environ["HOME"] = os.environ["TMPDIR"] = cfg["jobdir"]

    def serve(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.ctrl, 64, 4)
            except InterruptedError:
                continue
            if not msg:
                return          # manager gone
            if msg[:1] == b"C":
                self.configure(json.loads(msg[1:]))
                continue
            if msg[:1] != b"J" or len(fds) != 2 or "jobdir" not in self.zcfg:
                for fd in fds:
                    os.close(fd)
                continue
            # A kill request left over from the previous job was handled before
            # this message could be read (signals interrupt recv).
            self.kill_requested = False
            self.ctrl.send(b"D" + DONE.pack(self.run_one(fds)))

    def run_one(self, fds: list[int]) -> int:
        """Fork the job, wait for it (or its kill), sweep; the manager made its directory."""
        res_fd, out_fd = fds
        pid = os.fork()
        if pid == 0:
            harness.child_main(res_fd, out_fd, self.zcfg)   # never returns
        self.current = pid
        if self.kill_requested:        # arrived between the request and the fork
            self.kill_job(pid)
        os.close(res_fd)
        os.close(out_fd)
        _, status = os.waitpid(pid, 0)     # retried after a kill request (PEP 475)
        self.current = 0
        self.sweep(pid)
        return status

    def kill_job(self, pid: int) -> None:
        if self.in_pid_ns:
            self._kill_namespace()
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _kill_namespace() -> bool:
        """SIGKILL every other process in this PID namespace; False if none was left.

        kill(-1) from the init of a PID namespace reaches exactly the processes
        in it. Anywhere else (as root, in the host namespace) it would hit the
        whole machine, hence the check.
        """
        if os.getpid() != 1:
            raise RuntimeError("namespace sweep outside a PID namespace")
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def sweep(self, pid: int) -> None:
        """Kill and reap everything the job left behind."""
        if self.in_pid_ns:
            # Orphans were re-parented to us (we are init): kill, reap, repeat
            # until kill(-1) finds nobody.
            while self._kill_namespace():
                self._reap(block=True)
            return
        # Reduced levels: we are a child subreaper, so every orphan of the job
        # (a setsid() daemon included) is re-parented to us.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for attempt in range(2000):
            kids = self._children()
            if not kids:
                self._reap(block=False)
                return
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reap(block=False)
            time.sleep(0.0005 * min(attempt, 20))

    @staticmethod
    def _reap(block: bool) -> None:
        try:
            while True:
                pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
                if pid == 0:
                    return
        except ChildProcessError:
            return

    @staticmethod
    def _children() -> list[int]:
        me = os.getpid()
        try:
            with open(f"/proc/{me}/task/{me}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            pass
        kids = []           # kernel without CONFIG_PROC_CHILDREN: scan /proc
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        stat = f.read()
                    ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
                except (OSError, ValueError):
                    continue
                if ppid == me:
                    kids.append(int(name))
        return kids


def main() -> None:
    """``python -I -S -c 'from sandbox.zygote import main; main()' CTRL_FD CONFIG``."""
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    zcfg = json.loads(sys.argv[2])
    reduced = not zcfg["in_pid_ns"]
    harness.prepare_fork_server(reduced)
    if reduced:
        limits.prepare_die_with_parent()
    # Objects that exist now are never collected in a job, so the collector
    # does not touch (and copy) their pages after a fork.
    gc.collect()
    gc.freeze()
    ctrl.send(b"R")
    ForkServer(ctrl, zcfg).serve()
