"""Closed attack: an async live object (asyncpg, aiosqlite, redis.asyncio, httpx.AsyncClient: the
clients one registers with ``agent.module(client, name="db")``) hands agent code a
coroutine. Agent code drives it one step with ``.send(None)`` and gets the Future it waits
on; ``Future.get_loop()`` is the trusted process's running event loop, and
``loop.subprocess_shell`` runs a shell command there, scheduled with
``loop.call_soon_threadsafe(loop.create_task, ...)``. The guards block ``cr_frame`` and
``cr_await`` but not ``send``/``get_loop``, and the policy refuses modules and a few
builtins, not event loops.

This is code execution in the process that holds the secrets (isolation="none" is the only
mode a live object is allowed in). The membrane refuses
async methods, and the guards refuse event loops and futures and the driving of host
coroutines.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from agex import Agent, connect_llm
from agex.sandbox import Policy, Sandbox


class AsyncClient:
    """What async database and HTTP clients do: keep the loop they were made on, and wait
    on a future that their I/O resolves later."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def query(self, sql: str) -> list:
        """Run a query."""
        future = self._loop.create_future()
        # the answer arrives from the network later
        self._loop.call_soon_threadsafe(self._loop.call_later, 0.3, future.set_result, [(1,)])
        return await future


def _escape(marker: Path) -> str:
    command = shlex.quote(f"touch {shlex.quote(str(marker))}")
    return (
        "pending = db.query('select 1')\n"
        "future = pending.send(None)\n"
        "loop = future.get_loop()\n"
        "class Quiet:\n"
        "    def connection_made(self, transport):\n"
        "        pass\n"
        "    def pipe_data_received(self, fd, data):\n"
        "        pass\n"
        "    def pipe_connection_lost(self, fd, exc):\n"
        "        pass\n"
        "    def process_exited(self):\n"
        "        pass\n"
        "    def connection_lost(self, exc):\n"
        "        pass\n"
        f"loop.call_soon_threadsafe(loop.create_task, loop.subprocess_shell(Quiet, {command}))\n"
    )


def test_agent_code_does_not_reach_the_event_loop_through_an_async_live_object(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "shell-ran"

    async def main() -> None:
        policy = Policy()
        policy.live_object(AsyncClient(), "db")
        sandbox = Sandbox(policy)
        namespace = sandbox.namespace()
        await asyncio.to_thread(sandbox.run, _escape(marker), namespace)
        await asyncio.sleep(1.0)  # the loop runs what was scheduled on it

    asyncio.run(main())
    assert not marker.exists(), "agent code ran a shell command in the trusted process"


def test_through_an_async_task_of_an_agent(tmp_path: Path) -> None:
    """The same through the public API: an async task, as an async program runs one."""
    marker = tmp_path / "shell-ran"
    code = _escape(marker) + "task_success('done')\n"

    async def main() -> None:
        retry = "```python\ntask_success('refused')\n```"
        agent = Agent(
            llm=connect_llm(provider="scripted", responses=[f"```python\n{code}```", retry])
        )
        agent.module(AsyncClient(), name="db")

        @agent.task
        async def lookup() -> str:
            """Look it up."""

        assert await lookup() == "refused"
        await asyncio.sleep(1.0)

    asyncio.run(main())
    assert not marker.exists(), "agent code ran a shell command in the trusted process"
