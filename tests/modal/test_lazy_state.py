"""On the modal host a task reads only the stored variables its code can reach, in both
tiers: counted where the container's reads arrive, at the fake's Dicts and Volumes."""

from __future__ import annotations

from collections import Counter

import pytest

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted


@pytest.fixture
def asked(fake, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every Dict entry and Volume file read, by its name."""
    counted: Counter[str] = Counter()
    for op in ("_op_dict_get", "_op_volume_read"):
        real = getattr(fake, op)

        def read(name, create, key, real=real):
            counted[str(key)] += 1
            return real(name, create, key)

        monkeypatch.setattr(fake, op, read)
    return counted


def reads_of(asked: Counter[str], blob: str) -> int:
    return sum(n for key, n in asked.items() if blob in key)


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_an_untouched_variable_is_never_read(fake, asked, storage) -> None:
    state = connect_state(
        type="versioned", storage=storage, path="lazy" if storage == "disk" else None
    )
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=state,
        llm=scripted(
            "big = list(range(50_000))\nsmall = 1\ntask_success(0)",
            "small += 1\ntask_success(small)",
            "task_success(len(big) + small)",
        ),
    )

    @agent.task
    def job() -> int:
        """Job."""

    assert job() == 0
    inspect = agent.state()
    big = inspect.tree(inspect.head())["big"].blob
    for deployed in [d for app in fake.apps.values() for d in app.values()]:
        deployed.idle.clear()  # a new container, whose disk holds no copy of any blob
    asked.clear()
    assert job() == 2
    assert reads_of(asked, big) == 0
    assert job() == 50_002
    assert reads_of(asked, big) > 0
