"""The confinement of one worker process, every layer in the order that makes it work.

A worker is forked from a clean, single-threaded template and calls :func:`confine` before it
runs any code it was sent. From then on that code is treated as hostile: it may already have
escaped the in-process sandbox. Each layer covers what another misses:

- ``environment``: no secrets in ``os.environ``, nor in the block the process started with;
- ``limits``: memory, CPU, file size and descriptors (:class:`Limits`);
- ``network``: a new network namespace, with nothing but a loopback that is down;
- ``user``: a root worker becomes ``nobody``, so file modes protect the host's files too
  (if nobody could not read this Python, it stays uid 0 but without any capability);
- ``no_new_privs``: nothing the worker runs can gain privileges, and (not dumpable) no
  process of the same user can debug it;
- ``landlock``: files readable only where Python lives, writable only in the scratch directory;
- ``seccomp``: no programs, processes, sockets, debugging, namespaces or mounts.

Level ``"process"`` applies the layers that need no kernel feature beyond rlimits
(environment, limits, user, no_new_privs); level ``"kernel"`` applies them all. The layers
whose loss would leave a hole the others cannot cover raise :class:`ConfinementError`; the
network namespace and Landlock are reported ``off`` with the reason when the machine lacks
them, so that a deployer sees it (``layers`` says so before any worker starts).
"""

from __future__ import annotations

import os
import signal
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agex.isolation import landlock, seccomp
from agex.isolation.limits import Limits

__all__ = [
    "Confinement",
    "ConfinementError",
    "Limits",
    "confine",
    "default_readable",
    "kernel_unavailable",
    "layers",
]

LEVELS = ("process", "kernel")
LAYERS = ("limits", "no_new_privs", "user", "network", "landlock", "seccomp", "environment")
NOBODY = 65534  # nobody / nogroup

# Shared libraries, the dynamic loader's cache, time zones, and the two harmless devices.
_SYSTEM_READABLE = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/dev/null",
    "/dev/urandom",
)
# What name resolution and TLS read, added only when the worker may use the network.
_NETWORK_READABLE = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
)
# Harmless settings the worker keeps from its environment: language and time zone.
_KEPT_VARIABLES = ("LANG", "LANGUAGE", "TZ")

_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1


class ConfinementError(RuntimeError):
    """A layer that must hold could not be applied: the worker must not run code."""


@dataclass(frozen=True)
class Confinement:
    """How one worker is confined.

    ``readable`` adds read-only paths to the default set (:func:`default_readable`).
    ``exclude`` names paths the worker must never read (a server's state directory, its token
    file): every readable entry equal to or above one of them is dropped, since Landlock can
    only allow whole hierarchies and cannot carve a sub-path out of an allowed one.
    """

    level: str
    limits: Limits
    network: bool = False
    readable: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"confinement level must be one of {LEVELS}, not {self.level!r}")


def default_readable(exclude: Iterable[str] = ()) -> list[str]:
    """The paths a worker may read by default: the Python installation, every existing
    ``sys.path`` entry (the empty entry, the current directory, is not one), the shared
    libraries and a few system files; minus any entry equal to or above an excluded path."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [entry for entry in sys.path if entry]
    candidates += _SYSTEM_READABLE
    return _without(_existing(candidates), exclude)


def confine(spec: Confinement, scratch: str) -> dict[str, str]:
    """Confine the calling process for good; return each layer as "on" or "off: <reason>".

    Call it in a single-threaded process (a freshly forked worker) before it holds anything
    it should not keep. ``scratch`` is the only directory the worker may write to; ``HOME``
    and ``TMPDIR`` point at it.
    """
    report = dict.fromkeys(LAYERS, f"off: level {spec.level!r}")
    parent = os.getppid()
    kernel = spec.level == "kernel"
    scratch = os.path.abspath(scratch)
    if any(_covers(scratch, path) for path in spec.exclude):
        raise ConfinementError(f"the scratch directory {scratch} contains an excluded path")
    if kernel and (why := kernel_unavailable()) is not None:
        raise ConfinementError(f"level 'kernel' cannot be had here: {why}")
    _require_single_thread()
    extra = [*spec.readable, *(_NETWORK_READABLE if spec.network else ())]
    # An entry at or above the scratch directory's parent would open the sibling workers'
    # scratch directories (and they run as the same user): such entries are left out too.
    hidden = [*spec.exclude, os.path.dirname(scratch)]
    readable = _without(_existing([*default_readable(), *extra]), hidden)
    root = os.geteuid() == 0
    linux = sys.platform == "linux"

    _must("environment", lambda: _clean_environment(scratch))
    report["environment"] = "on"
    _must("limits", spec.limits.apply)
    report["limits"] = "on"

    tried: list[str] = []
    if kernel and spec.network:
        report["network"] = "off: the spec allows network"
    elif kernel and root:
        try:  # root can make a network namespace directly; later, as nobody, it cannot.
            _unshare(_CLONE_NEWNET)
            report["network"] = "on"
        except OSError as error:
            tried.append(f"unshare(CLONE_NEWNET): {error.strerror}")

    if root:
        problem = _nobody_cannot_use(scratch)
        if problem is None:
            _must("user", lambda: _become_nobody(scratch))
            report["user"] = "on"
        elif linux and kernel and landlock.available() is None:
            # Uid 0 still owns root's files: only Landlock keeps such a worker's hands off them.
            _must("user", _drop_capabilities)
            report["user"] = f"off: stayed uid 0 without capabilities, since {problem}"
        else:
            raise ConfinementError(root_without_nobody(problem))
    else:
        report["user"] = f"off: already unprivileged (uid {os.geteuid()})"

    if kernel and not spec.network and report["network"] != "on":
        ids = os.geteuid(), os.getegid()  # inside, unmapped, they read as the overflow id
        try:  # an unprivileged user gets one inside a user namespace of its own.
            _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
        except OSError as error:
            tried.append(f"unshare(CLONE_NEWUSER|CLONE_NEWNET): {error.strerror}")
            report["network"] = "off: " + "; ".join(tried)
        else:  # no way back: without its maps, the worker could not even create a file
            _must("network", lambda: _map_user_namespace(*ids))
            _must("network", _drop_capabilities)  # all of them, in the new namespace
            report["network"] = "on"

    if linux:
        _must("no_new_privs", _no_new_privileges)
        report["no_new_privs"] = "on"
        _die_with(parent)
    else:
        report["no_new_privs"] = "off: needs Linux"
    if not kernel:
        return report

    reason = landlock.available()
    if reason is None:
        writable = [scratch, os.devnull]
        _must("landlock", lambda: landlock.restrict(readable, writable, network=spec.network))
        report["landlock"] = "on"
    else:
        report["landlock"] = f"off: {reason}"
    _must("seccomp", lambda: seccomp.install(network=spec.network))
    report["seccomp"] = "on"
    return report


def layers(level: str) -> dict[str, str]:
    """What :func:`confine` would apply here at ``level``, without confining this process (the
    network namespace is tried in a short-lived child)."""
    if level not in LEVELS:
        raise ValueError(f"confinement level must be one of {LEVELS}, not {level!r}")
    report = dict.fromkeys(LAYERS, f"off: level {level!r}")
    report["environment"] = "on"
    try:
        import resource  # noqa: F401

        report["limits"] = "on"
    except ImportError:
        report["limits"] = "off: no setrlimit on this platform"
    linux = sys.platform == "linux"
    report["no_new_privs"] = "on" if linux else "off: needs Linux"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        uid = os.geteuid() if hasattr(os, "geteuid") else "?"
        report["user"] = f"off: already unprivileged (uid {uid})"
    else:
        problem = _nobody_cannot_use(None)
        report["user"] = "on" if problem is None else f"off: stays uid 0, since {problem}"
    if level == "kernel":
        report["network"] = _probe_network() if linux else "off: needs Linux"
        reason = landlock.available()
        report["landlock"] = "on" if reason is None else f"off: {reason}"
        reason = seccomp.available()
        report["seccomp"] = "on" if reason is None else f"off: {reason}"
    return report


def kernel_unavailable() -> str | None:
    """None when level "kernel" can be had here (Linux with seccomp), otherwise why not.
    A missing network namespace or Landlock is reported by :func:`layers`, not fatal."""
    reason = seccomp.available()
    return None if reason is None else f"seccomp: {reason}"


# The layers.


def _clean_environment(scratch: str) -> None:
    """Forget the environment, keeping only language and time zone, and home in scratch.

    ``os.environ`` is cleared, which unsets the C library's copy too; the strings the kernel
    placed at the top of the stack when the program started are overwritten with zeros.
    """
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in _KEPT_VARIABLES or name.startswith("LC_")
    }
    os.environ.clear()  # on POSIX, ``posix.environ`` is the very same dict
    _wipe_initial_environment()
    os.environ.update(kept)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    if "tempfile" in sys.modules:  # it may have chosen a directory already: not that one
        import tempfile

        tempfile.tempdir = scratch


def _wipe_initial_environment(names: tuple[str, ...] | None = None) -> None:
    """Zero the environment block the process started with (``/proc/self/environ``), or only
    the variables ``names`` in it: what another process of this user can read there,
    whatever ``os.environ`` (a copy) holds now."""
    try:
        with open("/proc/self/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except OSError:
        return
    start, end = int(fields[47]), int(fields[48])  # env_start and env_end (fields 50, 51)
    if not 0 < start < end:
        return
    import ctypes

    if names is None:
        ctypes.memset(start, 0, end - start)
        return
    wanted = tuple(name.encode() + b"=" for name in names)
    offset = 0
    for entry in ctypes.string_at(start, end - start).split(b"\0"):
        if entry.startswith(wanted):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1


def wipe_initial_environment(*names: str) -> None:
    """Zero ``names`` in the environment block the process started with (Linux), so that
    a secret read from one is not left where other processes of this user can read it."""
    if names:
        _wipe_initial_environment(names)


def root_without_nobody(problem: str) -> str:
    """Why a worker of a root supervisor cannot be confined at this level."""
    return (
        f"a worker started as root must become an unprivileged user, and {problem}; "
        "without Landlock it would keep uid 0, which still owns root's files. Make Python "
        "and its packages readable by others, run as an unprivileged user, or use "
        'isolation="kernel"'
    )


def process_unavailable() -> str | None:
    """None when level "process" keeps a worker off the supervisor's files here."""
    if os.geteuid() != 0:
        return None
    problem = _nobody_cannot_use(None)
    return None if problem is None else root_without_nobody(problem)


def _become_nobody(scratch: str) -> None:
    """Hand the scratch directory to nobody, then become nobody: groups, gid, uid, in that
    order (afterwards none of them could be changed), which also drops every capability."""
    os.chown(scratch, NOBODY, NOBODY)
    os.setgroups([])
    if hasattr(os, "setresuid"):
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    else:  # macOS: as root, setgid and setuid set the real and saved ids too
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _nobody_cannot_use(scratch: str | None) -> str | None:
    """Why nobody could not run this Python (import from ``sys.path``, reach the scratch
    directory), or None. Becoming nobody would otherwise break every later import."""
    for entry in sys.path:
        if entry and os.path.isdir(entry) and not _nobody_may(entry, os.R_OK | os.X_OK):
            return f"uid {NOBODY} cannot read {entry}"
    if scratch is not None and not _nobody_may(os.path.dirname(scratch), os.X_OK):
        return f"uid {NOBODY} cannot reach the scratch directory {scratch}"
    return None


def _nobody_may(path: str, wanted: int) -> bool:
    """Whether file modes let nobody search every directory down to ``path`` and then have
    ``wanted`` (``os.R_OK`` etc.) on it."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)[1:]
    ancestors = [os.sep + os.sep.join(parts[:i]) for i in range(len(parts))]
    try:
        if not all(_mode_allows(os.stat(p), os.X_OK) for p in ancestors):
            return False
        return _mode_allows(os.stat(real), wanted)
    except OSError:
        return False


def _mode_allows(info: os.stat_result, wanted: int) -> bool:
    shift = 6 if info.st_uid == NOBODY else 3 if info.st_gid == NOBODY else 0
    return (stat.S_IMODE(info.st_mode) >> shift) & wanted == wanted


def _map_user_namespace(uid: int, gid: int) -> None:
    """Map ``uid`` and ``gid`` (this process's, outside) to themselves in the user namespace
    just unshared."""
    # After a change of user the process is not dumpable, which makes its /proc files root's:
    # it could not write its own maps. _no_new_privileges turns this off again.
    _prctl(_PR_SET_DUMPABLE, 1)
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _no_new_privileges() -> None:
    """no_new_privs, and not dumpable: no process of the same user (a sibling worker, when
    the layers above it are missing) may debug this one or read its memory."""
    seccomp.set_no_new_privs()
    _prctl(_PR_SET_DUMPABLE, 0)


def _die_with(parent: int) -> None:
    """Be killed when the process that forked this one ends, however it ends (the kernel
    sees to it): agent code outlives neither its template nor, through it, its supervisor,
    whose limits it would escape. Set after the credentials changed, which clears it."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before this was set
        os._exit(70)


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


def _drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable capability sets (``capset``)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0))  # version 3
    data = ctypes.create_string_buffer(24)  # two (effective, permitted, inheritable) words
    if libc.capset(header, data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _probe_network() -> str:
    """Whether a network namespace can be made here, tried in a forked child."""
    flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    import ctypes  # noqa: F401  (loaded before the fork, not in the child)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            try:
                _unshare(flags)
            except OSError:
                _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
        except OSError as error:
            code = error.errno or 1
        os._exit(min(code, 255))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "on" if code == 0 else f"off: cannot unshare a network namespace: {os.strerror(code)}"


# Helpers.


def _must(layer: str, step: Callable[[], object]) -> None:
    try:
        step()
    except (OSError, RuntimeError) as error:
        raise ConfinementError(f"{layer}: {error}") from error


def _require_single_thread() -> None:
    """Namespaces and Landlock act on the calling thread only: refuse a threaded process."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return
    if threads > 1:
        raise ConfinementError(f"confine needs a single-threaded process, not {threads} threads")


def _existing(paths: Iterable[str]) -> list[str]:
    found: list[str] = []
    for path in paths:
        path = os.path.abspath(path)
        if path not in found and os.path.exists(path):
            found.append(path)
    return found


def _covers(entry: str, target: str) -> bool:
    """Whether ``entry`` is ``target`` or one of its ancestors, as written or resolved."""
    for a, b in (
        (os.path.abspath(entry), os.path.abspath(target)),
        (os.path.realpath(entry), os.path.realpath(target)),
    ):
        if b == a or b.startswith(a.rstrip(os.sep) + os.sep):
            return True
    return False


def _without(paths: list[str], exclude: Iterable[str]) -> list[str]:
    excluded = list(exclude)
    return [path for path in paths if not any(_covers(path, target) for target in excluded)]
