"""Where a place that runs loops for clients lets their models go: the gate of
``Isolation.endpoints``, on the far side's in-process path, and its absence here."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import pickle
import re
from typing import Any

import pytest

from agex import Agent, connect_llm, remote
from agex.hosts import Invocation
from agex.isolation.settings import LOCAL, Endpoint, Isolation
from agex.remote.envelope import Refused
from agex.state.config import StateConfig

SERVER_KEY = "sk-server-owned-openai-key-0123456789abcdef"
ENDPOINT = "http://models.internal:8000/v1"
GATED = Isolation(endpoints=(Endpoint(ENDPOINT, "LOCAL_API_KEY"), Endpoint("http://keyless:1")))


#: The openai provider builds only where its SDK is installed (not in the core session).
needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="the openai SDK is not installed"
)


def openai(**options: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "m", **options}


# -- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        openai(base_url="http://anywhere.example/v1"),
        openai(base_url="http://127.0.0.1:9/v1", key_env="BILLING_API_KEY"),
        openai(key_env="OTHER_API_KEY"),
    ],
)
def test_a_place_that_is_not_gated_accepts_any_endpoint_and_key(config) -> None:
    assert LOCAL.endpoints is None
    assert LOCAL.model(config) is None


@pytest.mark.parametrize(
    ("config", "allowed"),
    [
        (None, None),  # the place's own default model
        (openai(), None),
        (openai(key_env="OPENAI_API_KEY"), None),
        ({"provider": "gemini", "key_env": "GOOGLE_API_KEY"}, None),
        ({"provider": "scripted", "responses": ["x"]}, None),
        (openai(base_url=ENDPOINT), Endpoint(ENDPOINT, "LOCAL_API_KEY")),
        (openai(base_url=ENDPOINT + "/", key_env="LOCAL_API_KEY"), GATED.endpoints[0]),
        (openai(base_url="http://keyless:1/"), Endpoint("http://keyless:1")),
    ],
)
def test_a_gated_place_allows_default_endpoints_and_its_own(config, allowed) -> None:
    assert GATED.model(config) == allowed


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (openai(base_url="http://elsewhere:8000/v1"), "not at 'http://elsewhere:8000/v1'"),
        (openai(base_url=ENDPOINT + "/chat"), "--model-endpoint URL[=KEY_VAR]"),
        (openai(key_env="BILLING_API_KEY"), "only its own key (OPENAI_API_KEY)"),
        ({"provider": "thirdparty", "key_env": "X_API_KEY"}, "only its own key (none)"),
        (openai(base_url=ENDPOINT, key_env="BILLING_API_KEY"), "sends 'LOCAL_API_KEY' to"),
        (openai(base_url="http://keyless:1", key_env="X_API_KEY"), "sends no key to"),
        ({"provider": "anthropic", "base_url": "http://keyless:1"}, "'anthropic' needs one"),
    ],
)
def test_a_gated_place_refuses_what_its_operator_did_not_allow(config, says) -> None:
    with pytest.raises(Refused, match=r"--model-endpoint") as refused:
        GATED.model(config, "this server")
    assert refused.value.status == 403
    assert says in str(refused.value)
    assert str(refused.value).startswith("this server ")


@pytest.mark.parametrize(
    ("spec", "endpoint"),
    [
        ("http://127.0.0.1:11434/v1", Endpoint("http://127.0.0.1:11434/v1")),
        (
            " https://models.example/v1/=VLLM_API_KEY ",
            Endpoint("https://models.example/v1", "VLLM_API_KEY"),
        ),
        ("https://models.example=TOKEN", Endpoint("https://models.example", "TOKEN")),
    ],
)
def test_an_endpoint_is_a_url_and_the_variable_sent_there(spec, endpoint) -> None:
    assert Endpoint.parse(spec) == endpoint


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("models.example/v1=secret", "an http(s) URL"),
        ("ftp://models.example", "an http(s) URL"),
        ("https://u:secret@models.example/v1", "holds a user name or password"),
        ("https://models.example/v1?key=secret", "holds a query string"),
        ("https://models.example/v1=AGEX_SERVER_TOKEN", "none of agex's own"),
        ("https://models.example/v1=sk-secret-key", "must name the environment variable"),
    ],
)
def test_a_bad_endpoint_says_what_is_wrong(spec, says) -> None:
    with pytest.raises(ValueError, match=re.escape(says)) as error:
        Endpoint.parse(spec)
    assert "secret" not in str(error.value)


# -- the far side's in-process path ------------------------------------------------------


def _shipped(llm: Any, declared: dict[str, Any] | None = None) -> tuple[remote.Envelope, bytes]:
    agent = Agent(name="gated", llm=llm, state=StateConfig("ephemeral", None, None))

    @agent.task
    def answer() -> int:
        """Answer 42."""

    invocation = Invocation(agent, answer, {}, "s")
    envelope = remote.Envelope.of(invocation, timeout=30.0)
    raw = envelope.to_json()
    if declared is not None:
        raw["llm"] = declared
    payload = remote.ship(invocation, pickle_serializer())
    return remote.Envelope.from_json(json.loads(json.dumps(raw))), payload


def pickle_serializer() -> Any:
    from agex import plugins

    return plugins.create("serializer", "cloudpickle")


def _outcome(envelope: remote.Envelope, payload: bytes, isolation: Isolation) -> Any:
    async def run() -> Any:
        return [m async for m in remote.stream(envelope, payload, isolation=isolation)][-1]

    return asyncio.run(run())


@needs_openai
def test_a_refused_model_is_refused_before_the_task_is_loaded() -> None:
    envelope, _ = _shipped(connect_llm("openai", base_url="http://elsewhere:1/v1"))
    last = _outcome(envelope, b"not a pickle", Isolation(endpoints=()))
    assert last.data["type"] == "Refused"
    assert "--model-endpoint" in last.data["message"]


@needs_openai
def test_a_loaded_model_is_held_to_the_gate_whatever_the_envelope_said() -> None:
    """In this process the model is the loaded agent's own object: it is checked too."""
    llm = connect_llm("openai", base_url="http://elsewhere:1/v1")
    envelope, payload = _shipped(llm, declared={"provider": "openai", "model": "m"})
    last = _outcome(envelope, payload, Isolation(endpoints=()))
    assert last.data["type"] == "Refused"
    assert "not at 'http://elsewhere:1/v1'" in last.data["message"]


@needs_openai
def test_a_keyless_endpoint_gets_no_key_from_a_run_in_this_process(monkeypatch, fake_llm) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        envelope, payload = _shipped(connect_llm("openai", model="local", base_url=url + "/v1"))
        last = _outcome(envelope, payload, Isolation(endpoints=(Endpoint(url + "/v1"),)))
    assert last.kind == "result", last
    assert last.data["json"] == 42, last.data
    [request] = fake.requests
    assert "authorization" not in request["headers"]


# -- not gated where the caller's own loops run -------------------------------------------


@needs_openai
def test_this_process_calls_any_endpoint_with_the_key_its_agent_names(
    monkeypatch, fake_llm
) -> None:
    monkeypatch.setenv("ANY_API_KEY", "callers-own-key-0123456789")
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        llm = connect_llm("openai", model="local", base_url=url + "/v1", key_env="ANY_API_KEY")
        agent = Agent(name="mine", llm=llm)

        @agent.task
        def answer() -> int:
            """Answer 42."""

        assert answer() == 42
    [request] = fake.requests
    assert request["headers"]["authorization"] == "Bearer callers-own-key-0123456789"


@needs_openai
def test_a_model_held_to_an_endpoint_travels_so() -> None:
    llm = connect_llm("openai", base_url="http://keyless:1")
    llm.send_key_of(None)
    again = pickle.loads(pickle.dumps(llm))
    assert again.key() is None
    with pytest.raises(ValueError, match="always sends a key"):
        connect_llm("anthropic", base_url="http://keyless:1").send_key_of(None)


@needs_openai
def test_the_trusted_side_of_an_isolated_run_builds_only_what_the_gate_allows() -> None:
    """Where a worker runs the agent code, the model is built from the declared config."""
    from agex.isolation.supervisor import _model

    with pytest.raises(Refused, match="agent 'a' calls models only"):
        _model(openai(base_url="http://elsewhere:1/v1"), "a", GATED)
    keyless = _model(openai(base_url="http://keyless:1"), "a", GATED)
    assert keyless.key() is None  # type: ignore[attr-defined]
    keyed = _model(openai(base_url=ENDPOINT), "a", GATED)
    assert keyed.key_env == "LOCAL_API_KEY"  # type: ignore[attr-defined]
    assert _model(openai(base_url="http://elsewhere:1/v1"), "a").base_url  # type: ignore[attr-defined]
