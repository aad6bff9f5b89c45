"""Per-job resource limits and privilege drop.

Imported by the fork-server, which must stay small (every page it owns makes
each fork dearer), so this module uses only ``os`` and ``resource``; ctypes is
imported lazily and only at the reduced isolation levels.
"""

from __future__ import annotations

import os
import resource

PR_SET_PDEATHSIG = 1


def apply_rlimits(memory_mb: int, cpu_s: int, file_mb: int, max_procs: int,
                  limit_procs: bool) -> None:
    """Set the job's resource limits. Soft == hard so the job cannot raise them."""
    def lim(which, value):
        resource.setrlimit(which, (value, value))
    lim(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    # SIGXCPU at the soft limit, SIGKILL one second later even if ignored; the
    # wall-clock deadline in the manager normally fires first.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    lim(resource.RLIMIT_FSIZE, file_mb * 1024 * 1024)
    lim(resource.RLIMIT_CORE, 0)
    lim(resource.RLIMIT_NOFILE, 256)
    if limit_procs:
        # Only meaningful under a dedicated uid: the count is per user, and
        # root ignores it.
        lim(resource.RLIMIT_NPROC, max_procs)


def drop_privileges(uid: int) -> None:
    """Become ``uid`` (and gid ``uid``) with no groups and no capabilities, for good."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


_libc = None


def prepare_die_with_parent() -> None:
    """Load libc through ctypes now, while the Python installation is readable.

    After a uid drop, files under a 0700 home can no longer be opened, so the
    import must not wait for :func:`die_with_parent`.
    """
    global _libc
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (call after any uid change,
    which clears the setting)."""
    import ctypes
    import signal
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
