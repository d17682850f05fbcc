"""Resource limits for a worker process (``setrlimit``).

The limits are the floor every other layer stands on: they need no kernel feature beyond
POSIX, so they apply on any Unix. Each limit lowers both the soft and the hard value, so code
in the worker cannot raise it again (raising a hard limit needs a capability the worker no
longer has).
"""

from __future__ import annotations

from dataclasses import dataclass

_MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one worker may consume. ``None`` leaves that resource as it was inherited."""

    memory_mb: int | None = 1024
    """Address space: a runaway allocation fails with ``MemoryError`` instead of swapping."""
    cpu_seconds: int | None = None
    """CPU time: ``SIGXCPU`` at the limit, ``SIGKILL`` one second later."""
    file_size_mb: int | None = 64
    """Largest file the worker may write (CPython ignores ``SIGXFSZ``, so it gets EFBIG)."""
    open_files: int | None = 256
    """Descriptors: a leak in a loop stops early instead of exhausting the host's table."""

    def apply(self) -> None:
        """Lower the limits of the calling process; core dumps are always turned off, since a
        core file would copy the worker's memory (and whatever secrets it holds) to disk."""
        import resource

        _lower(resource.RLIMIT_CORE, 0, 0)
        if self.memory_mb is not None:
            _lower(resource.RLIMIT_AS, self.memory_mb * _MB, self.memory_mb * _MB)
        if self.cpu_seconds is not None:
            _lower(resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1)
        if self.file_size_mb is not None:
            _lower(resource.RLIMIT_FSIZE, self.file_size_mb * _MB, self.file_size_mb * _MB)
        if self.open_files is not None:
            _lower(resource.RLIMIT_NOFILE, self.open_files, self.open_files)


def _lower(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above what the process already has: even root is not raised."""
    import resource

    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    resource.setrlimit(which, (min(soft, hard), hard))
