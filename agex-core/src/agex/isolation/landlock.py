"""Landlock for a worker process: which files it may touch (Linux 5.13+).

Landlock is an unprivileged, stackable access control: a process declares every kind of
access it wants the kernel to check ("handled"), grants some of them on a few file
hierarchies, and from then on anything not granted fails with EACCES, whatever the file's
owner and mode say. The worker gets read access to what Python needs and full access to its
scratch directory only.

The rights handled are all the running kernel knows (its ABI version says which), so a newer
kernel closes more doors without a change here. From ABI 4 TCP bind/connect can be denied, and
from ABI 6 signals and abstract unix sockets are scoped: a worker cannot signal, or connect
to an abstract socket of, any process outside its own Landlock domain, its siblings included.

Landlock does not check ``stat``, ``chmod``/``chown``/``utime`` by path, or ``connect`` to a
named unix socket; the seccomp filter refuses those (or the socket itself).
Nothing here runs at import: ``ctypes`` is loaded when a function is called.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
import sys
from collections.abc import Iterable
from typing import NoReturn

# The same numbers on x86_64 and aarch64 (and every architecture since the calls are new).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
_MAKE_SYM, _REFER, _TRUNCATE, _IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
_BIND_TCP, _CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# The rights a rule on a single file (not a directory) may grant.
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
# Reading is enough to load a C extension: Landlock's EXECUTE is about execve only, and an
# mmap with PROT_EXEC of a file opened for reading is not checked by it.
_READ = _READ_FILE | _READ_DIR
# Everything inside the scratch directory, except making device nodes and executing.
_WRITE = _READ | _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG
_WRITE |= _MAKE_SOCK | _MAKE_FIFO | _MAKE_SYM | _REFER | _TRUNCATE


def available() -> str | None:
    """None when Landlock can be used here, otherwise why not."""
    if sys.platform != "linux":
        return "Landlock needs Linux"
    try:
        abi_version()
    except OSError as error:
        return str(error)
    return None


@functools.cache  # the kernel does not change under a process
def abi_version() -> int:
    """The Landlock ABI version of the running kernel; OSError saying why when there is none."""
    result = _syscall(_CREATE_RULESET, 0, 0, _CREATE_RULESET_VERSION)
    if result < 0:
        code = _errno()
        if code == 38:  # ENOSYS
            raise OSError(code, "the kernel has no Landlock (Linux 5.13 or later needed)")
        if code == 95:  # EOPNOTSUPP
            raise OSError(code, "Landlock is built in but not enabled at boot (lsm=)")
        raise OSError(code, f"Landlock: {os.strerror(code)}")
    return result


def handled_fs(abi: int) -> int:
    """Every filesystem right a kernel of this ABI version can check."""
    if abi >= 5:
        return (_IOCTL_DEV << 1) - 1
    if abi >= 3:
        return (_TRUNCATE << 1) - 1
    if abi >= 2:
        return (_REFER << 1) - 1
    return (_MAKE_SYM << 1) - 1


def restrict(readable: Iterable[str], writable: Iterable[str], *, network: bool = False) -> int:
    """Restrict the calling thread, and every thread or process it starts later, for good.

    Paths in ``readable`` may be read (files) or listed and read below (directories); paths in
    ``writable`` may also be written, created in and removed from. Paths that do not exist,
    or that this user cannot reach, are skipped. Unless ``network``, TCP bind and connect are
    denied too (ABI 4 or later). Sets no_new_privs, which Landlock requires of an
    unprivileged process. Returns the ABI used.
    """
    abi = abi_version()
    fs = handled_fs(abi)
    net = 0 if network or abi < 4 else _BIND_TCP | _CONNECT_TCP
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = struct.pack("=QQQ", fs, net, scoped)[:size]
    ruleset = _syscall(_CREATE_RULESET, attr, size, 0)
    if ruleset < 0:
        _fail("landlock_create_ruleset")
    try:
        for paths, rights in ((readable, _READ), (writable, _WRITE)):
            for path in paths:
                _allow(ruleset, path, rights & fs)
        from agex.isolation.seccomp import set_no_new_privs

        set_no_new_privs()
        if _syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str, rights: int) -> None:
    """Grant ``rights`` beneath ``path`` (only the file rights when it is a file)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # missing, or out of reach for this user: nothing to grant
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        if rights:
            rule = struct.pack("=Qi", rights, fd)
            if _syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
                _fail(f"landlock_add_rule({path!r})")
    finally:
        os.close(fd)


def _syscall(number: int, *args: int | bytes) -> int:
    """A raw call: integers as ``long``, bytes as a pointer to a copy of them."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    keep = []
    passed: list[ctypes.c_long | ctypes.c_void_p] = [ctypes.c_long(number)]
    for arg in args:
        if isinstance(arg, bytes):
            buffer = ctypes.create_string_buffer(arg, len(arg))
            keep.append(buffer)
            passed.append(ctypes.c_void_p(ctypes.addressof(buffer)))
        else:
            passed.append(ctypes.c_long(arg))
    result: int = libc.syscall(*passed)
    return result


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _fail(what: str) -> NoReturn:
    code = _errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")
