"""Ray's errors as agex's: what happened to a run, and what to do about it."""

from __future__ import annotations

from typing import Any

from agex.errors import RemoteExecutionError

LOST = (
    "agex does not run it again, which would repeat its model calls and the side effects of "
    "its code. The session's state is at the task's last commit: run the task again"
)


def lost(ray: Any, exc: BaseException) -> bool:
    """Whether the runner is gone (its node or process died)."""
    errors = ray.exceptions
    return isinstance(
        exc,
        errors.RayActorError | errors.NodeDiedError | errors.WorkerCrashedError,
    )


def failure(ray: Any, exc: BaseException) -> RemoteExecutionError | None:
    """Ray's error as agex's, saying what happened and what to do; None: not Ray's."""
    errors = ray.exceptions
    said = str(exc).lower()
    if isinstance(exc, errors.NodeDiedError) or (
        isinstance(exc, errors.RayActorError) and "node" in said and "died" in said
    ):
        return RemoteExecutionError(
            f"the Ray node running the task died: {LOST}", remote_type=type(exc).__name__
        )
    if lost(ray, exc):
        return RemoteExecutionError(
            f"the Ray worker running the task died ({_first_line(exc)}): {LOST}",
            remote_type=type(exc).__name__,
        )
    if isinstance(exc, errors.RuntimeEnvSetupError):
        return RemoteExecutionError(
            "Ray could not set up the runtime environment for the task ("
            + _first_line(exc)
            + "): check the host's runtime_env=, and that the nodes can install the pinned "
            "packages",
            remote_type=type(exc).__name__,
        )
    if isinstance(exc, errors.RayError):
        return RemoteExecutionError(
            f"Ray failed to run the task: {_first_line(exc)}",
            remote_traceback=str(exc),
            remote_type=type(exc).__name__,
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
