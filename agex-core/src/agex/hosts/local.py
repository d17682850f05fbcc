"""Host "local": the loop runs in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex.hosts.running import RUNS
from agex.loop import run_loop

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink


class LocalHost:
    provider = "local"

    def validate(self, agent: Agent) -> None:
        """Every state type works here: the storage is made in this process."""

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        return await RUNS.run(invocation.agent.name, invocation.session, run_loop(invocation, sink))

    def cancel(self, agent: Agent, session: str) -> int:
        return RUNS.cancel(agent.name, session)

    def warmup(self, agent: Agent) -> None:
        """Nothing to prepare: the loop runs here."""

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider}
