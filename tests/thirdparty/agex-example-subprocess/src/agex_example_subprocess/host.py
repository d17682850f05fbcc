"""Host "subprocess": each task's whole loop runs in a new Python process, which reads the
envelope and the shipped task on its stdin and writes the run's messages, one JSON line each,
on its stdout."""

import asyncio
import json
import sys
from typing import Any

from agex import RemoteExecutionError, plugins, remote
from agex.hosts import Host
from agex.hosts.running import RUNS


class SubprocessHost(Host):
    provider = "subprocess"
    ships_agent = True  # the agent runs in a child process: live objects cannot go

    def __init__(self, python: str = sys.executable, timeout: float = 300.0) -> None:
        self.python, self.timeout = python, float(timeout)

    def validate(self, agent: Any) -> None:
        state = agent.state_config
        if state.type == "live" or (state.type == "versioned" and state.storage == "memory"):
            raise ValueError(
                "a child process does not share this process's memory: use "
                'connect_state(type="versioned", storage="disk", path=...) or type="ephemeral"'
            )

    async def arun(self, invocation: Any, sink: Any) -> Any:
        serializer = plugins.create("serializer", "cloudpickle")
        envelope = remote.Envelope.of(invocation, timeout=self.timeout)
        payload = remote.ship(invocation, serializer)
        agent = invocation.agent
        run = self._follow(envelope, payload, sink)
        outcome = await RUNS.run(agent.name, invocation.session, run)
        return remote.settle(outcome, invocation, key="")  # a pipe only we hold

    async def _follow(self, envelope: Any, payload: bytes, sink: Any) -> Any:
        child = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "agex_example_subprocess.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(json.dumps(envelope.to_json()).encode() + b"\n" + payload)
            await child.stdin.drain()
            child.stdin.close()
            async for line in child.stdout:
                outcome = await remote.deliver(*json.loads(line), sink)
                if outcome is not None:
                    return outcome
            raise RemoteExecutionError(f"the worker ended (exit code {await child.wait()})")
        finally:
            if child.returncode is None:
                child.kill()  # cancelled: the state stays at its last commit
                await child.wait()

    def cancel(self, agent: Any, session: str) -> int:
        return RUNS.cancel(agent.name, session)

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider, "python": self.python, "timeout": self.timeout}
