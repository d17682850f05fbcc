"""Agent code in confined worker processes: the boundary between code an agent wrote (or a
client shipped) and the process that holds secrets.

Levels, weakest first: ``"none"`` (agent code in this process, behind the sandbox's guards
only), ``"process"`` (a worker process per run, with resource limits, no new privileges,
an unprivileged user and no secrets in its environment), ``"kernel"`` (that, plus a
seccomp allow-list, no network, and Landlock). See docs/security.md.
"""

from __future__ import annotations

import functools
import os
import sys

LEVELS = ("none", "process", "kernel")


def check(level: object, what: str = "isolation") -> str:
    """``level`` if it is a level this machine can give; a ValueError saying why not."""
    if level not in LEVELS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    assert isinstance(level, str)
    return _available(level)


@functools.cache
def _available(level: str) -> str:
    """Probing the kernel costs system calls: once per process (a server checks every
    run's level)."""
    if level == "process" and not _can_fork():
        raise ValueError(
            'isolation="process" needs a POSIX system with fork (Linux, macOS); '
            f'{sys.platform} has none. Use isolation="none" here, or run the agent on a '
            "host that isolates it"
        )
    if level == "process":
        from agex.isolation.confine import process_unavailable

        why = process_unavailable()
        if why is not None:
            raise ValueError(f'isolation="process" cannot be had here: {why}')
    if level == "kernel":
        from agex.isolation.confine import kernel_unavailable

        why = kernel_unavailable()
        if why is not None:
            raise ValueError(
                f'isolation="kernel" cannot be had here: {why}. Use isolation="process" '
                "(a confined worker with resource limits), or run on Linux with seccomp"
            )
    return level


def strongest() -> str:
    """The strongest level this machine can give."""
    for level in reversed(LEVELS):
        try:
            return check(level)
        except ValueError:
            continue
    return "none"  # pragma: no cover - "none" always checks


def stronger(a: str, b: str) -> str:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


def _can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"
