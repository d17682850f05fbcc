"""Host "local": the loop runs in this process."""

from __future__ import annotations

from typing import Any

from agex.hosts.running import RUNS
from agex.loop import inherited_stores, run_loop
from agex.protocols import AgentLike, Host, Invocation, Sink


class LocalHost(Host):
    provider = "local"

    def validate(self, agent: AgentLike) -> None:
        """Every state type works here: the storage is made in this process."""

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        # Called from a run's agent code (a sub-agent), the loop keeps its state where that
        # run keeps its own: on a server, inside the server's state directory.
        work = run_loop(invocation, sink, inherited_stores())
        return await RUNS.run(invocation.agent.name, invocation.session, work)

    def cancel(self, agent: AgentLike, session: str) -> int:
        return RUNS.cancel(agent.name, session)

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider}

    def __repr__(self) -> str:
        return "LocalHost()"
