"""On the modal host a task reads only the stored variables its code can reach, in both
tiers: counted where the container's code asks its storage (so containers are threads of
this process here)."""

from __future__ import annotations

from collections import Counter

import pytest

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted
from agex_host_modal.storage import ModalDictStorage, ModalVolumeStorage


@pytest.fixture
def fake(fake_threads):
    return fake_threads


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every stored value a storage is asked for, by its key."""
    counted: Counter[str] = Counter()
    for kind in (ModalDictStorage, ModalVolumeStorage):
        real = kind.get

        def get(self, key, real=real):
            if key.startswith("b/"):
                counted[key] += 1
            return real(self, key)

        monkeypatch.setattr(kind, "get", get)
    return counted


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
    asked.clear()
    assert job() == 2
    assert not asked["b/" + big]
    assert job() == 50_002
    assert asked["b/" + big]
