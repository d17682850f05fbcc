"""How a place that runs loops (this process, a server, a container) isolates agent code:
the weakest level it accepts, and the limits of its workers."""

from __future__ import annotations

from dataclasses import dataclass

from agex.isolation import LEVELS, check, stronger
from agex.isolation.pool import Spec
from agex.remote.envelope import Refused

#: A worker's memory limit when neither the agent nor the host sets one.
MEMORY_MB = 2048


@dataclass(frozen=True)
class Isolation:
    #: The weakest level this place runs agent code at; an agent may ask for more.
    level: str = "none"
    #: Workers' memory limit, and the most an agent may ask for.
    memory_mb: int = MEMORY_MB
    #: CPU seconds a worker may use (None: no limit but the run's time limit).
    cpu_seconds: int | None = None
    #: Loosened layers: network for the workers, and paths they may read.
    network: bool = False
    readable: tuple[str, ...] = ()
    #: Paths workers must never read (a server's state directory, its token file).
    hidden: tuple[str, ...] = ()
    #: Other agex servers (URLs) that sub-agents a client declared may be sent to; this
    #: place's own token for them, if any, goes nowhere else.
    remotes: tuple[str, ...] = ()

    def remote(self, host: dict[str, object], where: str = "this host") -> None:
        """Refuse a declared sub-agent host this place may not send runs to."""
        url = host.get("url")
        allowed = {remote.rstrip("/") for remote in self.remotes}
        if host.get("provider") == "http" and isinstance(url, str) and url.rstrip("/") in allowed:
            return
        raise Refused(
            403,
            f"{where} sends sub-agents only to the agex servers it was started with "
            f"(--remote URL), not to {host.get('provider')!r} at {str(url)[:200]!r}",
        )

    def spec(
        self, asked: str | None, memory_mb: int | None, where: str = "this host"
    ) -> Spec | None:
        """The worker for an agent that asks for ``asked`` isolation (None: ours) and
        ``memory_mb``; None to run it in this process. :class:`Refused` when it asks for
        less than we accept, or more than we have."""
        if asked is not None and LEVELS.index(asked) < LEVELS.index(self.level):
            raise Refused(
                403,
                f"{where} runs agent code at isolation {self.level!r} or stronger, and the "
                f"agent asks for {asked!r}: leave isolation unset, or ask for {self.level!r}",
            )
        level = stronger(asked or self.level, self.level)
        try:
            check(level)
        except ValueError as exc:
            raise Refused(400, f"{where}: {exc}") from None
        if memory_mb is not None and memory_mb > self.memory_mb:
            raise Refused(
                403,
                f"the agent asks for {memory_mb} MB of memory and {where} allows at most "
                f"{self.memory_mb}: ask for less",
            )
        if level == "none":
            return None
        return Spec(
            level=level,
            memory_mb=memory_mb or self.memory_mb,
            cpu_seconds=self.cpu_seconds,
            network=self.network,
            readable=self.readable,
            hidden=self.hidden,
        )


#: This process: agent code runs here unless its agent asks for a worker.
LOCAL = Isolation()
