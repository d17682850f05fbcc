"""Host "local": the loop runs in this process; agent code too, or in a confined worker
process when the agent asks for isolation."""

from __future__ import annotations

from typing import Any

from agex.hosts.running import RUNS
from agex.loop import ABANDONED, inherited_stores, run_loop
from agex.protocols import AgentLike, Host, Invocation, Sink


class LocalHost(Host):
    provider = "local"

    def validate(self, agent: AgentLike) -> None:
        """Every state type works here: the storage is made in this process."""

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        # Called from a run's agent code (a sub-agent), the loop keeps its state where that
        # run keeps its own: on a server, inside the server's state directory.
        stores = inherited_stores()
        agent = invocation.agent
        if getattr(agent, "isolation", None) in (None, "none"):
            value = await RUNS.run(
                agent.name, invocation.session, run_loop(invocation, sink, stores)
            )
            return None if value is ABANDONED else value
        return await RUNS.run(agent.name, invocation.session, _isolated(invocation, sink, stores))

    def cancel(self, agent: AgentLike, session: str) -> int:
        return RUNS.cancel(agent.name, session)

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider}

    def __repr__(self) -> str:
        return "LocalHost()"


async def _isolated(invocation: Invocation, sink: Sink, stores: Any) -> Any:
    """The loop here, the agent code in a worker: the task goes there as bytes, and its value
    comes back through the restricted loader, as from a remote host."""
    from agex.isolation.settings import LOCAL
    from agex.isolation.supervisor import Run, registered
    from agex.remote import Envelope, settle, ship
    from agex.runtime import manifest
    from agex.serializers import CloudpickleSerializer

    agent = invocation.agent
    envelope = Envelope.of(invocation)
    spec = LOCAL.spec(envelope.isolation, envelope.memory_mb)
    assert spec is not None
    payload = ship(invocation, CloudpickleSerializer())
    llm = agent.resolved_llm()
    tasks = registered(agent)
    # The prompts, from this process's own agent and task: the model is asked for the first
    # step while the worker loads the task.
    prompts = manifest(invocation.task, invocation.arguments)
    run = Run(
        envelope, payload, sink, stores=stores, spec=spec, llm=llm, tasks=tasks, manifest=prompts
    )
    return settle(await run(), invocation, None)
