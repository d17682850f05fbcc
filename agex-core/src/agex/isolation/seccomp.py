"""A seccomp-BPF allow-list for a worker process (Linux, x86_64 and aarch64).

The filter is written directly in classic BPF and installed through ``ctypes``, so it needs
neither libseccomp nor a package. It lists what a CPython process needs to run Python, import
modules (C extensions included), use the descriptors it already holds and start threads.
Everything else fails with EPERM, which Python raises as ``PermissionError``: the worker sees a
clear error rather than being killed. Starting programs and processes, debugging other
processes, namespaces, mounts, kernel keys, BPF and io_uring are all outside the list.

A few calls are allowed only after a look at their arguments: ``clone`` only when it makes a
thread, ``kill``/``tgkill`` only aimed at the worker itself (its pid is written into the filter
when it is installed), and ``ioctl``/``fcntl``/``prctl`` only for their harmless requests.
``clone3`` fails with ENOSYS instead, so the C library falls back to ``clone``, which the
filter can inspect (``clone3`` keeps its flags in memory, out of the filter's reach).

Nothing here runs at import: ``ctypes`` is loaded when a function is called.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
import sys

# Audit architecture (checked first: a call through another ABI is a different table), the
# column of the tables below, and the number of the seccomp call itself.
_ARCHES = {"x86_64": (0xC000003E, 0, 317), "aarch64": (0xC00000B7, 1, 277)}

# "name x86_64 aarch64", "-" where the architecture has no such call.
_PLAIN = """
# files: opening, reading and listing is further limited by Landlock to the allowed paths
read 0 63, write 1 64, readv 19 65, writev 20 66, pread64 17 67, pwrite64 18 68
preadv 295 69, pwritev 296 70, preadv2 327 286, pwritev2 328 287, open 2 -, openat 257 56
openat2 437 437, close 3 57, close_range 436 436, lseek 8 62, stat 4 -, fstat 5 80
lstat 6 -, newfstatat 262 79, statx 332 291, access 21 -, faccessat 269 48
faccessat2 439 439, statfs 137 43, fstatfs 138 44, getdents 78 -, getdents64 217 61
getcwd 79 17, chdir 80 49, fchdir 81 50, readlink 89 -, readlinkat 267 78, mkdir 83 -
mkdirat 258 34, rmdir 84 -, unlink 87 -, unlinkat 263 35, rename 82 -, renameat 264 38
renameat2 316 276, symlink 88 -, symlinkat 266 36, truncate 76 45, ftruncate 77 46
fallocate 285 47, fsync 74 82, fdatasync 75 83, fadvise64 221 223, flock 73 32
fchmod 91 52, umask 95 166, getxattr 191 8, lgetxattr 192 9, fgetxattr 193 10
listxattr 194 11, llistxattr 195 12, flistxattr 196 13
# descriptors already held (the inherited socket), and private ones: pipes, epoll, eventfd
dup 32 23, dup2 33 -, dup3 292 24, pipe 22 -, pipe2 293 59, sendfile 40 71
copy_file_range 326 285, splice 275 76, poll 7 -, ppoll 271 73, select 23 -
pselect6 270 72, epoll_create 213 -, epoll_create1 291 20, epoll_ctl 233 21
epoll_wait 232 -, epoll_pwait 281 22, epoll_pwait2 441 441, eventfd 284 -, eventfd2 290 19
timerfd_create 283 85, timerfd_settime 286 86, timerfd_gettime 287 87
recvfrom 45 207, sendto 44 206, recvmsg 47 212, sendmsg 46 211, recvmmsg 299 243
sendmmsg 307 269, shutdown 48 210, getsockopt 55 209, setsockopt 54 208, getsockname 51 204
getpeername 52 205
# memory, executable mappings included (C extensions)
brk 12 214, mmap 9 222, munmap 11 215, mprotect 10 226, mremap 25 216, madvise 28 233
msync 26 227, membarrier 324 283
# signal handling and threads
rt_sigaction 13 134, rt_sigprocmask 14 135, rt_sigreturn 15 139, rt_sigpending 127 136
rt_sigtimedwait 128 137, rt_sigsuspend 130 133, sigaltstack 131 132
restart_syscall 219 128, pause 34 -, futex 202 98, futex_waitv 449 449
set_robust_list 273 99, set_tid_address 218 96, rseq 334 293, sched_yield 24 124
sched_getaffinity 204 123, getcpu 309 168, exit 60 93, exit_group 231 94, wait4 61 260
waitid 247 95
# identity, time, randomness
getpid 39 172, getppid 110 173, gettid 186 178, getuid 102 174, geteuid 107 175
getgid 104 176, getegid 108 177, getresuid 118 148, getresgid 120 150, getgroups 115 158
getpgid 121 155, getpgrp 111 -, getsid 124 156, getrlimit 97 163, getrusage 98 165
times 100 153, sysinfo 99 179, uname 63 160, getpriority 140 141, capget 125 90
clock_gettime 228 113, clock_getres 229 114, clock_nanosleep 230 115, gettimeofday 96 169
nanosleep 35 101, time 201 -, alarm 37 -, getitimer 36 102, setitimer 38 103
timer_create 222 107, timer_settime 223 110, timer_gettime 224 108
timer_getoverrun 225 109, timer_delete 226 111, getrandom 318 278, arch_prctl 158 -
"""

# Allowed only after the argument checks in _program.
_CHECKED = """
clone 56 220, clone3 435 435, kill 62 129, tgkill 234 131, ioctl 16 29, fcntl 72 25
prctl 157 167, prlimit64 302 261, utimensat 280 88, socketpair 53 199, socket 41 198
connect 42 203, bind 49 200, listen 50 201, accept 43 202, accept4 288 242
"""

_CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET: never, not even in a thread.
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
_CLONE_NAMESPACES |= 0x20000000 | 0x40000000
# isatty (TCGETS, TCGETS2), terminal size, FIONREAD, non-blocking sockets, close-on-exec.
_IOCTLS = (0x5401, 0x802C542A, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)
# Duplicating, flags, record locks, reading a pipe's size, seals; not F_SETOWN/F_SETSIG
# (signals to others), nor F_SETPIPE_SZ (pipe buffers are memory no rlimit counts).
_FCNTLS = (0, 1, 2, 3, 4, 5, 6, 7, 9, 36, 37, 38, 1030, 1032, 1033, 1034)
# Reading state and naming threads or mappings.
_PRCTLS = (3, 15, 16, 21, 23, 39, 0x53564D41)
_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10

# Classic BPF, and what seccomp makes of a filter's answer.
_LD, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_DENY = _ERRNO | errno.EPERM
_Insn = tuple[int, int, int, int]  # code, jump if true, jump if false, constant


@functools.cache  # the kernel does not change under a process
def available() -> str | None:
    """None when a filter can be installed here, otherwise why not."""
    if sys.platform != "linux":
        return "seccomp needs Linux"
    machine = os.uname().machine
    if machine not in _ARCHES:
        return f"no seccomp filter for the {machine} architecture (only x86_64 and aarch64)"
    if struct.calcsize("P") != 8:
        return "seccomp filter written for 64-bit processes only"
    for action in (_ERRNO, _KILL_PROCESS):
        code = struct.pack("=I", action)
        if _seccomp(2, 0, code) != 0:  # SECCOMP_GET_ACTION_AVAIL
            return f"kernel refuses seccomp filters: {os.strerror(_last_errno())}"
    return None


def install(*, network: bool = False) -> None:
    """Confine the calling process (all its threads) for good.

    Sets no_new_privs first, which the kernel requires of an unprivileged filter and which
    keeps a later ``execve`` from gaining privileges. ``network=True`` keeps TCP/UDP sockets
    (``socket`` for IPv4/IPv6, ``connect``, ``bind``, ``listen``, ``accept``).
    """
    reason = available()
    if reason is not None:
        raise RuntimeError(f"cannot install the seccomp filter: {reason}")
    audit, column, _ = _ARCHES[os.uname().machine]
    program = _program(audit, _numbers(column), os.getpid(), network)
    set_no_new_privs()
    import ctypes

    instructions = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buffer))  # sock_fprog
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC: every thread, or none.
    result = _seccomp(1, 1, fprog)
    if result > 0:
        raise RuntimeError(f"seccomp: thread {result} could not take the filter")
    if result < 0:
        code = _last_errno()
        raise OSError(code, f"seccomp: {os.strerror(code)}")


def set_no_new_privs() -> None:
    """``PR_SET_NO_NEW_PRIVS``: nothing this process runs can gain privileges again."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    if libc.prctl(38, one, zero, zero, zero) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"PR_SET_NO_NEW_PRIVS: {os.strerror(code)}")


def _numbers(column: int) -> dict[str, int]:
    """The call numbers of one architecture, from the tables above."""
    found: dict[str, int] = {}
    for line in (_PLAIN + _CHECKED).splitlines():
        if not line or line.startswith("#"):
            continue
        for entry in line.split(","):
            name, *numbers = entry.split()
            if numbers[column] != "-":
                found[name] = int(numbers[column])
    return found


def _plain_names() -> list[str]:
    names: list[str] = []
    for line in _PLAIN.splitlines():
        if line and not line.startswith("#"):
            names.extend(entry.split()[0] for entry in line.split(","))
    return names


def _lo(arg: int) -> int:
    """Offset of an argument's low 32 bits in ``struct seccomp_data`` (little-endian)."""
    return 16 + 8 * arg


def _hi(arg: int) -> int:
    return 16 + 8 * arg + 4


def _all_of(*checks: tuple[int, tuple[int, ...]]) -> list[_Insn]:
    """Allow when, for every (offset, values), the 32-bit word at offset is one of values."""
    block: list[_Insn] = []
    ends: list[int] = []  # the last comparison of each check: its miss goes to the denial
    for offset, values in checks:
        block.append((_LD, 0, 0, offset))
        for i, value in enumerate(values):
            block.append((_JEQ, len(values) - 1 - i, 0, value))
        ends.append(len(block) - 1)
    deny_at = len(block) + 1
    for at in ends:
        code, jt, _, k = block[at]
        block[at] = (code, jt, deny_at - at - 1, k)
    return [*block, (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _DENY)]


def _thread_clone() -> list[_Insn]:
    """``clone`` makes a thread (CLONE_THREAD set, no new namespace) or is refused."""
    return [
        (_LD, 0, 0, _lo(0)),
        (_JSET, 2, 0, _CLONE_NAMESPACES),
        (_JSET, 0, 1, _CLONE_THREAD),
        (_RET, 0, 0, _ALLOW),
        (_RET, 0, 0, _DENY),
    ]


def _program(audit: int, numbers: dict[str, int], pid: int, network: bool) -> list[_Insn]:
    """The whole filter: architecture check, then one block per listed call, else EPERM."""
    checked: dict[str, list[_Insn]] = {
        "clone": _thread_clone(),
        "clone3": [(_RET, 0, 0, _ERRNO | errno.ENOSYS)],
        "kill": _all_of((_lo(0), (pid,))),
        "tgkill": _all_of((_lo(0), (pid,))),
        "ioctl": _all_of((_lo(1), _IOCTLS)),
        "fcntl": _all_of((_lo(1), _FCNTLS)),
        "prctl": _all_of((_lo(0), _PRCTLS)),
        # Reading limits only (new limit NULL), of this process only.
        "prlimit64": _all_of((_lo(0), (0, pid)), (_lo(2), (0,)), (_hi(2), (0,))),
        # futimens only: a NULL path means the descriptor itself; Landlock does not cover
        # changing metadata by path, so it is refused, as chmod and chown by path are.
        "utimensat": _all_of((_lo(1), (0,)), (_hi(1), (0,))),
        # A private, unnamed pair (asyncio's self-pipe): reaches nothing outside.
        "socketpair": _all_of((_lo(0), (_AF_UNIX,))),
    }
    if network:
        checked["socket"] = _all_of((_lo(0), (_AF_INET, _AF_INET6)))
        for name in ("connect", "bind", "listen", "accept", "accept4"):
            checked[name] = [(_RET, 0, 0, _ALLOW)]
    # A call through another ABI (32-bit x86 on x86_64) kills: its numbers mean other calls.
    # x32 calls share the x86_64 audit arch but carry bit 30 in their number: none is listed.
    program: list[_Insn] = [
        (_LD, 0, 0, 4),  # seccomp_data.arch
        (_JEQ, 1, 0, audit),
        (_RET, 0, 0, _KILL_PROCESS),
        (_LD, 0, 0, 0),  # seccomp_data.nr
    ]
    blocks = [(name, [(_RET, 0, 0, _ALLOW)]) for name in _plain_names()]
    for name, block in [*blocks, *checked.items()]:
        if name not in numbers:
            continue
        if len(block) > 255:
            raise AssertionError(f"seccomp block for {name} too long")
        program.append((_JEQ, 0, len(block), numbers[name]))
        program.extend(block)
    program.append((_RET, 0, 0, _DENY))
    return program


def _seccomp(operation: int, flags: int, argument: bytes) -> int:
    """The raw ``seccomp`` call: glibc has no wrapper for it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    _, _, number = _ARCHES[os.uname().machine]
    buffer = ctypes.create_string_buffer(argument, len(argument))
    result: int = libc.syscall(
        ctypes.c_long(number),
        ctypes.c_long(operation),
        ctypes.c_long(flags),
        ctypes.c_void_p(ctypes.addressof(buffer)),
    )
    return result


def _last_errno() -> int:
    import ctypes

    return ctypes.get_errno()
