"""``async def`` callbacks are awaited wherever the loop's events come from: agent code in a
confined worker, and a sub-agent called from agent code. (Every host proves the plain case
through the host contract.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agex import Agent, connect_llm
from agex.isolation import strongest


def replies(*codes: str) -> list[str]:
    return [f"```python\n{code}\n```" for code in codes]


@pytest.mark.parametrize("isolation", ["none", strongest()])
def test_async_callbacks_with_agent_code_where_it_runs(isolation: str) -> None:
    agent = Agent(
        llm=connect_llm("scripted", responses=replies("print('hi')", "task_success(1)")),
        isolation=isolation,
    )
    seen: list[str] = []

    async def on_event(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    @agent.task
    async def one() -> int:
        """One."""

    assert asyncio.run(one(on_event=on_event)) == 1
    assert seen == ["TaskStartEvent", "ActionEvent", "OutputEvent", "ActionEvent", "SuccessEvent"]


@pytest.mark.parametrize("isolation", ["none", strongest()])
def test_a_sub_agents_events_reach_an_async_callback(isolation: str) -> None:
    specialist = Agent(
        name="specialist",
        llm=connect_llm("scripted", responses=replies("task_success(text.upper())")),
    )
    boss = Agent(
        name="boss",
        llm=connect_llm("scripted", responses=replies("task_success(shout('hey'))")),
        isolation=isolation,
    )

    @boss.fn
    @specialist.task
    def shout(text: str) -> str:
        """Shout it."""

    @boss.task
    async def lead() -> str:
        """Lead."""

    seen: list[tuple[str, str]] = []

    async def on_event(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append((event.agent_name, type(event).__name__))

    assert asyncio.run(lead(on_event=on_event)) == "HEY"
    assert ("specialist", "SuccessEvent") in seen
    assert seen[-1] == ("boss", "SuccessEvent")
    assert seen.index(("specialist", "SuccessEvent")) < len(seen) - 1


def test_an_async_callback_that_raises_fails_the_call() -> None:
    agent = Agent(llm=connect_llm("scripted", responses=replies("task_success(1)")))

    async def on_event(event: Any) -> None:
        await asyncio.sleep(0)
        raise LookupError("the callback's own error")

    @agent.task
    async def one() -> int:
        """One."""

    with pytest.raises(LookupError, match="the callback's own error"):
        asyncio.run(one(on_event=on_event))
