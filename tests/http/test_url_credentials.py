"""Passwords in addresses stay out of what agex shows: a server address may not hold
credentials (its token has a place of its own), and a proxy's, from the environment, is
masked in errors, which are printed, logged and may reach a model."""

from __future__ import annotations

import pytest

from agex import Agent, RemoteExecutionError, connect_host, connect_llm


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2@agents.example.com:8443",
        "ftp://alice:hunter2@agents.example.com",
        "http://:hunter2@agents.example.com",
        "http://hunter2@agents.example.com",
    ],
)
def test_a_server_address_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="token=") as caught:
        connect_host(provider="http", url=url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "proxy", ["ftp://user:PROXYPASS@proxy.example:21", "socks4://user:PROXYPASS@proxy.example"]
)
def test_a_proxy_error_masks_the_proxys_password(monkeypatch, proxy: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    agent = Agent(
        host=connect_host(provider="http", url="http://127.0.0.1:9", token="t"),
        llm=connect_llm(provider="scripted", responses=["x"]),
    )

    @agent.task
    def anything() -> int:
        """Anything."""

    with pytest.raises(RemoteExecutionError, match="proxy") as caught:
        anything()
    assert "PROXYPASS" not in str(caught.value)
    assert "user:***@proxy.example" in str(caught.value)
