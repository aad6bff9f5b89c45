"""Operating-system isolation for sandbox workers: namespaces, mounts, limits.

Everything here is Linux and standard library only (``ctypes`` reaches the few
syscalls Python 3.11 does not wrap: unshare, mount, prctl).

Isolation levels, strongest first. The worker picks the strongest one the
machine permits and reports it; the trainer-side ``Sandbox.isolation`` shows it.

``namespaces+uid``
    Needs root (real, not inside a user namespace). Per worker: a network
    namespace with only a down loopback (so every connect fails), a private
    mount namespace in which every mount is read-only, home directories, the
    project tree, site-packages and /run are hidden under empty tmpfs, the
    world-writable dirs (/tmp, /var/tmp, /dev/shm) are replaced by root-owned
    tmpfs, an IPC and a UTS namespace, and a PID namespace whose init is the
    fork-server (so ``kill(-1)`` from it reaches exactly the job's processes,
    including ones that called ``setsid()``). Per job: an unprivileged uid
    unique to the worker, no_new_privs, rlimits.
``uid``
    Root without namespaces (a restricted container). Unprivileged uid,
    no_new_privs, rlimits, a child-subreaper sweep. No network or filesystem
    isolation beyond what file permissions give.
``rlimits``
    Not root. rlimits, a new session per job and a child-subreaper sweep.
    The job runs as the trainer's user: it can signal that user's processes
    and write where that user can.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import site
import sysconfig

from .limits import drop_privileges

LEVEL_NAMESPACES = "namespaces+uid"
LEVEL_UID = "uid"
LEVEL_RLIMITS = "rlimits"
LEVELS = (LEVEL_NAMESPACES, LEVEL_UID, LEVEL_RLIMITS)

# Jobs run as UID_BASE + the worker's host pid: unique among live workers, so
# RLIMIT_NPROC counts only one job's processes and no two workers (or two
# trainer ranks) share a uid. The range is far above ordinary users' uids.
UID_BASE = 1_000_000_000

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


# --------------------------------------------------------------------------
# Detection

def can_drop_uid(uid: int) -> bool:
    """Fork a probe that tries the uid drop; True if it worked."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            drop_privileges(uid)
            code = 0 if os.getuid() == uid else 1
        except OSError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# --------------------------------------------------------------------------
# Mount namespace layout

def _mountinfo() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) of every mount, in kernel order."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6:
                continue
            # Mount points escape space, tab, newline and backslash as octal.
            point = parts[4].encode().decode("unicode_escape").encode("latin-1").decode(
                "utf-8", "replace")
            out.append((point, set(parts[5].split(","))))
    return out


def _remount_readonly(point: str) -> None:
    # A bind remount replaces the per-mount flags, so carry over the ones the
    # mount already has (nosuid, nodev, ...) and add MS_RDONLY.
    st = os.statvfs(point)
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                             (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                             (os.ST_NODIRATIME, MS_NODIRATIME),
                             (os.ST_RELATIME, MS_RELATIME)):
        if st.f_flag & st_flag:
            flags |= ms_flag
    mount(None, point, None, flags)


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_prefixes() -> list[str]:
    """Directories the job's interpreter needs readable (stdlib, extension modules)."""
    import sys
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                           sys.base_exec_prefix)}
    return sorted(paths)


def python_readable_by_others() -> bool:
    """True if an unprivileged user can read the stdlib (every parent dir o+x)."""
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    path = stdlib
    while True:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return False
        need = 0o005 if path == stdlib else 0o001
        if mode & need != need:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def site_package_dirs() -> list[str]:
    dirs = set()
    for key in ("purelib", "platlib"):
        for scheme_vars in ({}, {"base": __import__("sys").base_prefix}):
            try:
                dirs.add(sysconfig.get_paths(vars=scheme_vars)[key])
            except KeyError:
                pass
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # some virtualenv versions ship an old site.py
        pass
    return sorted(os.path.realpath(d) for d in dirs if os.path.isdir(d))


def enter_namespaces() -> None:
    """Unshare mount, network, IPC and UTS namespaces for this worker.

    Raises OSError where the machine does not permit it (not root, or a
    container without CAP_SYS_ADMIN); nothing has changed then.
    """
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    # Nothing mounted from here on may propagate back to the host.
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def lay_out_filesystem(tmpfs_mb: int, hide: list[str], allow_site_packages: bool) -> str:
    """Give the worker's mount namespace the view jobs get; returns the job base dir.

    Everything read-only; homes, the project tree, /run and site-packages
    hidden; /tmp a small private tmpfs that only root may write to (jobs get a
    directory inside it).
    """
    keep = python_prefixes()
    keep_fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}

    # 1. Every existing mount read-only, except /proc (replaced for the
    #    worker's PID namespace), /dev itself (device nodes such as /dev/null
    #    must stay writable) and those already read-only.
    for point, opts in _mountinfo():
        if "ro" in opts or _is_under(point, "/proc") or point == "/dev":
            continue
        try:
            _remount_readonly(point)
        except OSError:
            # A mount shadowed by a later mount on the same point cannot be
            # reached by path; the top one is what jobs see.
            pass

    # 2. Hide homes, the project tree, /run (host sockets such as dbus'),
    #    site-packages (data sets with answers ship there) and extra paths.
    masks = ["/root", "/home", "/run", "/var/tmp", "/dev/shm", "/dev/mqueue"]
    masks += [os.path.realpath(p) for p in hide if p]
    if not allow_site_packages:
        masks += site_package_dirs()
    masks = [m for m in dict.fromkeys(masks) if m != "/"]
    outer = [m for m in masks if not any(_is_under(m, k) for k in keep)]
    inner = [m for m in masks if m not in outer]
    mask_opts = "mode=0755,size=64k,nr_inodes=64"
    mounted = []
    for m in sorted(outer, key=lambda p: p.count("/")):
        if os.path.isdir(m) and not os.path.islink(m):
            mount("tmpfs", m, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, mask_opts)
            mounted.append(m)

    # 3. Re-expose the Python installation where a mask covered it (a Python
    #    under a 0700 /root is the usual case): recreate the path inside the
    #    mask's tmpfs and bind the original back, read-only.
    for p in keep:
        if any(_is_under(p, m) for m in mounted):
            os.makedirs(p, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{keep_fds[p]}", p, None, MS_BIND | MS_REC)
            _remount_readonly(p)
        os.close(keep_fds[p])
    for m in sorted(inner, key=lambda p: p.count("/")):
        if os.path.isdir(m):
            mount("tmpfs", m, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, mask_opts)
            mounted.append(m)
    for m in mounted:
        _remount_readonly(m)

    # 4. /tmp: the only writable place, a size-capped tmpfs owned by root with
    #    mode 0711: a job can use its own directory but not list or create
    #    anything beside it.
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"mode=0711,size={tmpfs_mb}m,nr_inodes=20000")
    os.chdir("/")
    return "/tmp"


def mount_namespace_proc() -> None:
    """Mount a /proc that shows only the worker's PID namespace.

    Must run in a process inside that namespace (the mounter's namespace is the
    one /proc shows). hidepid=2 hides root's processes (the fork-server) from
    jobs.
    """
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
