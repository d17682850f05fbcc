"""On a gated place (a server running loops for clients), a client's model may hold only
options that cannot change where or how its requests go. The gate once looked at
``base_url`` and ``key_env`` alone, and gemini's ``http_options`` (which replace the
client's address per request) sent the server's GEMINI_API_KEY to a URL the client chose."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from agex import Agent, connect_llm, plugins, remote
from agex.errors import AgexError
from agex.hosts import Invocation
from agex.isolation.settings import GENERATION_OPTIONS, LOCAL, Endpoint, Isolation
from agex.remote.envelope import Refused
from agex.state.config import StateConfig

SERVER_KEY = "AIzaServerOwnedGeminiKey0123456789abcdef"
ENDPOINT = "http://models.internal:8000/v1"
#: A server allowing no endpoint beyond the providers' defaults, and one with a keyless one.
GATED = Isolation(endpoints=())
WITH_ENDPOINT = Isolation(endpoints=(Endpoint(ENDPOINT),))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (google) is absent too
        return False


needs_genai = pytest.mark.skipif(
    not _installed("google.genai"), reason="google-genai is not installed"
)


def gemini(**options: Any) -> dict[str, Any]:
    return {"provider": "gemini", "model": "m", "base_url": None, **options}


def _run_here(llm: Any, declared: dict[str, Any], isolation: Isolation) -> Any:
    """The last message of a shipped run of ``llm``'s agent, whose envelope declares
    ``declared`` as its model, on the far side's in-process path."""
    agent = Agent(name="gated", llm=llm, state=StateConfig("ephemeral", None, None))

    @agent.task
    def answer() -> int:
        """Answer 1."""

    invocation = Invocation(agent, answer, {}, "s")
    raw = remote.Envelope.of(invocation, timeout=30.0).to_json()
    envelope = remote.Envelope.from_json({**raw, "llm": declared})
    payload = remote.ship(invocation, plugins.create("serializer", "cloudpickle"))

    async def run() -> Any:
        return [m async for m in remote.stream(envelope, payload, isolation=isolation)][-1]

    return asyncio.run(run())


# -- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "option"),
    [
        (gemini(http_options={"base_url": "http://attacker/"}), "http_options"),
        (gemini(httpOptions={"base_url": "http://attacker/"}), "httpOptions"),
        (gemini(http_options={"headers": {"x-forwarded-host": "attacker"}}), "http_options"),
        (gemini(http_options={"api_version": "../../elsewhere"}), "http_options"),
        (gemini(client_args={"proxy": "http://attacker:3128"}), "client_args"),
        (gemini(async_client_args={"proxy": "http://attacker"}), "async_client_args"),
        (gemini(cached_content="cachedContents/operators-own"), "cached_content"),
        (gemini(tools=[{"url_context": {}}]), "tools"),
        ({"provider": "openai", "model": "m", "extra_headers": {"x-a": "b"}}, "extra_headers"),
        ({"provider": "openai", "model": "m", "extra_query": {"a": "b"}}, "extra_query"),
        ({"provider": "openai", "model": "m", "store": True}, "store"),
        ({"provider": "anthropic", "mcp_servers": [{"url": "http://x"}]}, "mcp_servers"),
        ({"provider": "litellm", "model": "m", "api_base": "http://attacker"}, "api_base"),
        ({"provider": "thirdparty", "url": "http://attacker"}, "url"),
        # A generation setting of the SDKs is not an option of the scripted provider.
        ({"provider": "scripted", "responses": ["x"], "temperature": 0.5}, "temperature"),
        ({"provider": "openai", "responses": ["x"]}, "responses"),
    ],
)
def test_a_gated_place_refuses_an_option_that_is_not_on_its_list(config, option) -> None:
    for isolation in (GATED, WITH_ENDPOINT):
        with pytest.raises(Refused) as refused:
            isolation.model(config, "this server")
        assert refused.value.status == 403
        message = str(refused.value)
        assert f"not {option}:" in message, message
        assert "this server takes from a client's model only the options" in message, message
        taken = "responses" if config["provider"] == "scripted" else "temperature"
        assert taken in message, message


def test_the_refusal_names_every_unlisted_option_and_lists_what_is_taken() -> None:
    with pytest.raises(Refused) as refused:
        GATED.model(gemini(http_options={}, client_args={}, temperature=0.1))
    message = str(refused.value)
    assert "not client_args, http_options:" in message, message
    scripted = {"provider": "scripted", "responses": [], "api_base": "x"}
    with pytest.raises(Refused, match="only the options chunk_size, delay, model, position, re"):
        GATED.model(scripted)


@pytest.mark.parametrize("setting", sorted(GENERATION_OPTIONS))
def test_a_gated_place_takes_generation_settings_at_any_endpoint_it_allows(setting) -> None:
    assert GATED.model(gemini(**{setting: 1})) is None
    config = {"provider": "openai", "model": "m", "base_url": ENDPOINT, setting: 1}
    assert WITH_ENDPOINT.model(config) == Endpoint(ENDPOINT)


def test_a_gated_place_takes_the_scripted_providers_own_options() -> None:
    scripted = connect_llm("scripted", responses=["a", "b"], delay=0.0, chunk_size=2)
    assert GATED.model(scripted.config()) is None  # type: ignore[attr-defined]


def test_a_place_that_is_not_gated_takes_any_option() -> None:
    assert LOCAL.model(gemini(client_args={"proxy": "http://mine:3128"})) is None
    assert LOCAL.model({"provider": "litellm", "api_base": "http://mine"}) is None


# -- the paths a server takes ----------------------------------------------------------------


@needs_genai
def test_the_trusted_side_refuses_http_options_before_sending_anything(
    monkeypatch, fake_llm
) -> None:
    """The attack as reported: without the check, the request and the key reach ``url``."""
    from agex.isolation.supervisor import _model

    monkeypatch.setenv("GEMINI_API_KEY", SERVER_KEY)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(1)\n```")]
        config = gemini(max_retries=0, http_options={"base_url": url + "/"})
        with pytest.raises(Refused, match="not http_options"):
            GATED.model(config)  # what a server checks before loading the task
        with pytest.raises(Refused, match="not http_options"):
            _model(config, "exfil", GATED)  # what it builds the model from
        # Not gated (the caller's own process), the provider refuses the option itself.
        with pytest.raises(AgexError, match="do not pass http_options"):
            _model(config, "mine")
    assert not fake.requests


@needs_genai
def test_the_trusted_side_builds_a_gemini_model_with_generation_settings(
    monkeypatch, fake_llm
) -> None:
    from agex.isolation.supervisor import _model

    monkeypatch.setenv("GEMINI_API_KEY", SERVER_KEY)
    model = _model(gemini(max_retries=0, temperature=0.25, seed=7), "fine", GATED)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(1)\n```")]
        model.base_url = url  # type: ignore[attr-defined]  # Google's address, on loopback

        async def call() -> str:
            return "".join([p async for p in model.stream([{"role": "user", "content": "hi"}])])

        assert "task_success(1)" in asyncio.run(call())
    [request] = fake.requests
    assert request["body"]["generationConfig"]["temperature"] == 0.25
    assert request["body"]["generationConfig"]["seed"] == 7


@needs_genai
def test_a_loaded_model_is_held_to_the_options_whatever_the_envelope_said() -> None:
    """In the server's process the model is the client's own object: the gate reads its
    configuration too, not only the one the envelope declares."""
    llm = connect_llm("gemini", model="m", cached_content="cachedContents/operators-own")
    last = _run_here(llm, {"provider": "gemini", "model": "m"}, GATED)
    assert last.data["type"] == "Refused", last
    assert "not cached_content:" in last.data["message"]
