"""Shared pieces of the ray host's failure, cancel, sub-agent and state tests: versioned
postgres state a Ray worker reaches, long scripted runs, and waiting on another thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from agex import connect_state
from agex.testing.host import scripted


def pg_state(state_path: Callable[[str], str | None]) -> Any:
    """Versioned state in the session's PostgreSQL (AGEX_POSTGRES_URL set here)."""
    return connect_state(type="versioned", storage="postgres", path=state_path("postgres"))


def pg_env(postgres: Any) -> dict[str, Any]:
    """The runtime env that lets a Ray worker reach the session's PostgreSQL."""
    return {"env_vars": {"AGEX_POSTGRES_URL": postgres.url}}


def counting(steps: int, delay: float) -> Any:
    """A model that sets ``n = 1 .. steps`` one step at a time, ``delay`` seconds per reply,
    then ends with ``n``: long enough to act on a run while it runs."""
    codes = [f"n = {i}" for i in range(1, steps + 1)]
    return scripted(*codes, "task_success(n)", delay=delay)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Watch:
    """Events of a run as they reach the caller; ``wait_actions(k)`` blocks until ``k``
    actions (steps) arrived."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def actions(self) -> int:
        return sum(type(e).__name__ == "ActionEvent" for e in self.events)

    def wait_actions(self, count: int, within: float = 120.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.actions() >= count, within):
                kinds = [type(e).__name__ for e in self.events]
                raise AssertionError(f"no {count} actions within {within}s: {kinds}")


class Call:
    """A blocking call on its own thread: ``result(within)`` gives its value or raises what
    it raised, or fails the test if it has not ended within the (generous) bound."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._box: dict[str, Any] = {}
        self.started = time.monotonic()

        def target() -> None:
            try:
                self._box["value"] = func(*args, **kwargs)
            except BaseException as exc:  # handed to the test's thread
                self._box["error"] = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, within: float) -> Any:
        self._thread.join(within)
        if self._thread.is_alive():
            raise AssertionError(f"the call had not ended within {within}s: hung")
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def wait_until(check: Callable[[], bool], within: float, what: str) -> None:
    ends = time.monotonic() + within
    while not check():
        if time.monotonic() > ends:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.1)


def runners_of(host: Any) -> list[Any]:
    """This process's runners of ``host``'s configuration (its resources and concurrency)."""
    import json

    from agex_host_ray import cluster

    options = host.options
    prefix = json.dumps([options.actor(), options.concurrency], sort_keys=True)[:-1] + ","
    with cluster._lock:
        return [r for key, rs in cluster._runners.items() if key.startswith(prefix) for r in rs]
