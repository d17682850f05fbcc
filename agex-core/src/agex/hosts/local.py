"""Host "local": the loop runs in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex.loop import run_loop

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink


class LocalHost:
    provider = "local"

    def validate(self, agent: Agent) -> None:
        if agent.state_config.type == "versioned":
            raise ValueError(
                "versioned state is not available in this version of agex yet: use "
                'connect_state(type="live") to keep variables in this process, or '
                'type="ephemeral"'
            )

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        return await run_loop(invocation, sink)

    def warmup(self, agent: Agent) -> None:
        """Nothing to prepare: the loop runs here."""

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider}
