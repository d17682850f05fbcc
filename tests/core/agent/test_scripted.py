import asyncio
import time

import pytest

from agex import connect_llm
from agex.llm import split_reply
from agex.llm.scripted import ScriptExhausted


def collect(llm) -> list[str]:
    async def run():
        return [piece async for piece in llm.stream([])]

    return asyncio.run(run())


def test_replays_in_order_and_chunks() -> None:
    llm = connect_llm(provider="scripted", responses=["abcdefg", "xy"], chunk_size=3)
    assert collect(llm) == ["abc", "def", "g"]
    assert collect(llm) == ["xy"]
    with pytest.raises(ScriptExhausted, match="used all 2 of its replies"):
        collect(llm)


def test_delay_per_reply() -> None:
    llm = connect_llm(provider="scripted", responses=["a"], delay=0.2)
    start = time.monotonic()
    collect(llm)
    assert time.monotonic() - start >= 0.2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"responses": "one string"}, TypeError),
        ({"responses": ["a"], "delay": -1}, ValueError),
        ({"responses": ["a"], "chunk_size": 0}, ValueError),
    ],
)
def test_bad_options(options, error) -> None:
    with pytest.raises(error):
        connect_llm(provider="scripted", **options)


def test_config_has_the_position() -> None:
    llm = connect_llm(provider="scripted", responses=["a", "b"])
    collect(llm)
    assert llm.config()["position"] == 1
    assert llm.config()["provider"] == "scripted"


@pytest.mark.parametrize(
    ("reply", "thinking", "code"),
    [
        ("Plan.\n```python\nx = 1\n```\nafter", "Plan.", "x = 1"),
        ("```py\ny = 2\n```", "", "y = 2"),
        ("no code here", "no code here", None),
        ("first\n```python\na = 1\n```\n```python\nb = 2\n```", "first", "a = 1"),
        ("cut off\n```python\nz = 3", "cut off", "z = 3"),
    ],
)
def test_split_reply(reply, thinking, code) -> None:
    assert split_reply(reply) == (thinking, code)
