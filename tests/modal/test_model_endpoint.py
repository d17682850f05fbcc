"""A Modal container runs the caller's own loops with the caller's own keys (the secrets it
names): unlike an agex server, it calls a model at whatever endpoint the caller's agent
names, with the key variable the agent names."""

from __future__ import annotations

import pytest

from agex import Agent, connect_host, connect_llm, connect_state
from agex.stores import LOCAL
from agex_host_modal import sdk
from agex_host_modal.testing import FakeModal

pytest.importorskip("openai", reason="openai is not installed")

KEY = "caller-own-endpoint-key-0123456789"


@pytest.fixture
def fake_with_key(clock):
    modal = FakeModal(secrets={"llm-keys": {"ENDPOINT_API_KEY": KEY}}, clock=clock)
    LOCAL.forget()
    try:
        with sdk.use(modal):
            yield modal
    finally:
        LOCAL.forget()
        modal.close()


def test_a_container_calls_the_endpoint_and_key_its_caller_names(fake_with_key, fake_llm) -> None:
    with fake_llm.serving() as (server, url):
        server.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        agent = Agent(
            name="own-endpoint",
            host=connect_host(provider="modal", secrets="llm-keys"),
            state=connect_state(type="ephemeral"),
            llm=connect_llm(
                "openai", model="local", base_url=url + "/v1", key_env="ENDPOINT_API_KEY"
            ),
        )

        @agent.task
        def answer() -> int:
            """Answer 42."""

        assert answer() == 42
    [request] = server.requests
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
