"""The fork-server: a small, clean interpreter that forks one process per job.

Started by the worker manager as ``python -I -S -c ...`` (a fresh interpreter,
not a fork of the manager), with the jobs' environment already in place. It
imports the harness and a few stdlib modules once, freezes the heap, and then
only ever:

1. receives a job request (two file descriptors, nothing of the job's content:
   its memory, which every job inherits, never holds code, tests or answers),
2. creates the job directory and forks the job process,
3. waits for it, or kills it when the manager says so,
4. kills and reaps everything the job left behind, removes the directory,
5. reports the wait status.

Keeping this process small matters: fork cost and the page faults a job takes
grow with it (see docs/sandbox.md).
"""

from __future__ import annotations

import gc
import json
import os
import select
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
        self.jobdir = ""
        self.in_pid_ns = zcfg["in_pid_ns"]

    def configure(self, cfg: dict) -> None:
        """Late settings from the manager, known once the filesystem is laid out."""
        self.jobdir = self.zcfg["jobdir"] = cfg["jobdir"]
        # Set once here; a job inherits them without touching environ.
        os.environ["HOME"] = os.environ["TMPDIR"] = self.jobdir

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
            if msg[:1] != b"J" or len(fds) != 2 or not self.jobdir:
                for fd in fds:
                    os.close(fd)
                continue        # a kill that arrived after its job ended
            status = self.run_one(fds)
            self.ctrl.send(b"D" + DONE.pack(status))

    def run_one(self, fds: list[int]) -> int:
        res_fd, out_fd = fds
        os.mkdir(self.jobdir, 0o700)
        if self.zcfg["drop_uid"]:
            os.chown(self.jobdir, self.zcfg["uid"], self.zcfg["uid"])
        pid = os.fork()
        if pid == 0:
            harness.child_main(res_fd, out_fd, self.zcfg)   # never returns
        os.close(res_fd)
        os.close(out_fd)
        status = self.wait(pid)
        self.sweep(pid)
        remove_tree(self.jobdir)
        return status

    def wait(self, pid: int) -> int:
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(self.ctrl, select.POLLIN)
            while True:
                for fd, _ in poller.poll():
                    if fd == pidfd:
                        return os.waitpid(pid, 0)[1]
                    msg = self.ctrl.recv(64)
                    if not msg:          # manager died: take the job down with us
                        self.kill_job(pid)
                        os._exit(0)
                    if msg[:1] == b"K":
                        self.kill_job(pid)
        finally:
            os.close(pidfd)

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
