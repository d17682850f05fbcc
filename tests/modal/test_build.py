"""``host.build(agent)`` makes the real ``modal.App`` offline: the seed's settings, the named
secrets, the state Volume, and an image that pins what the agent's code needs."""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
import sys

import cloudpickle
import modal
import pytest
from modal._utils.async_utils import synchronizer

from agex import Agent, connect_host, connect_llm, connect_state
from agex.remote.dependencies import needs
from agex_host_modal.app import app_name


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("building the app tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def seed_host(**options):
    settings = dict(secrets="llm-keys", gpu="A10G", memory=4096, timeout=600.0)
    return connect_host(provider="modal", scaledown_window=300, **{**settings, **options})


def the_function(app):
    functions = synchronizer._translate_in(app)._local_state.functions
    assert list(functions) == ["run_task"]
    return synchronizer._translate_out(functions["run_task"])


def image_commands(function) -> list[str]:
    """The Dockerfile commands of every layer of the function's image (Modal's internals:
    there is no public way to read them offline)."""
    commands: list[str] = []

    def walk(image):
        closure = image._load.__closure__ or ()
        contents = (c.cell_contents for c in closure)
        cells = dict(zip(image._load.__code__.co_freevars, contents, strict=False))
        for base in cells.get("base_images", {}).values():
            walk(base)
        if "base_image" in cells:
            walk(cells["base_image"])
        if cells.get("dockerfile_function"):
            commands.extend(cells["dockerfile_function"]("2025.06").commands)

    walk(synchronizer._translate_in(function)._spec.image)
    return commands


def test_build_makes_the_seed_function_offline(offline):
    host = seed_host(secrets=["llm-keys", "search-keys"])
    agent = Agent(host=host, state=connect_state(type="versioned", storage="disk", path="my-agent"))
    app = host.build(agent)
    assert isinstance(app, modal.App)
    assert app.name == app_name(agent, host)
    info = the_function(app).info()
    assert info.memory_mib == 4096
    assert info.gpus == [("A10G", 1)]
    assert info.timeout == 600 + 60  # room for the task to report its own TaskTimeout
    assert info.secrets == [
        "modal.Secret.from_name('llm-keys')",
        "modal.Secret.from_name('search-keys')",
    ]
    assert {p: v.name for p, v in info.volumes.items()} == {"/agex-volumes/my-agent": "my-agent"}


def test_image_pins_python_and_packages_sorted(offline):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("openai")

    host = seed_host()
    agent = Agent(host=host, llm=connect_llm("openai", model="gpt-4o-mini"))
    agent.fn(httpx.get)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"python:{python}" in " ".join(image_commands(the_function(host.build(agent))))
    commands = image_commands(the_function(host.build(agent)))
    install = next(c for c in commands if "uv pip install" in c)
    pins = [word for word in install.split() if "==" in word]
    assert pins == sorted(pins)
    assert f"cloudpickle=={cloudpickle.__version__}" in pins
    assert f"httpx=={httpx.__version__}" in pins
    assert any(p.startswith("openai==") for p in pins)


def test_needs_are_stable_and_follow_the_registrations(tmp_path, monkeypatch):
    host = seed_host()
    agent = Agent(host=host)
    first = needs(agent)
    assert first == needs(agent)
    assert app_name(agent, host) == app_name(agent, host)
    before = app_name(agent, host)

    (tmp_path / "shop_tools.py").write_text("def price(item):\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shop_tools = importlib.import_module("shop_tools")
    try:
        agent.fn(shop_tools.price)
        after = needs(agent)
        digest = after.digest()
        assert "shop_tools" in after.sources  # no distribution: it travels as source
        assert app_name(agent, host) != before
        (tmp_path / "shop_tools.py").write_text("def price(item):\n    return 4\n")
        assert needs(agent).digest() != digest  # edited source: a new image
    finally:
        sys.modules.pop("shop_tools", None)


def test_agex_itself_is_in_the_image():
    got = needs(Agent(host=seed_host()))
    everything = set(got.sources) | {p.partition("==")[0] for p in got.pins}
    assert {"agex", "agex_host_modal"} <= everything | {"agex"}
    assert "agex-core" in everything or "agex" in got.sources
    assert "modal" not in everything  # Modal puts its own client in every container


@pytest.mark.parametrize(
    ("provider", "module", "distribution"),
    [
        ("openai", "openai", "openai"),
        ("anthropic", "anthropic", "anthropic"),
        ("gemini", "google.genai", "google-genai"),
    ],
)
def test_the_image_pins_the_model_s_sdk(offline, provider, module, distribution):
    pytest.importorskip(module)
    host = seed_host()
    agent = Agent(host=host, llm=connect_llm(provider))
    commands = image_commands(the_function(host.build(agent)))
    install = next(c for c in commands if "uv pip install" in c)
    assert f"{distribution}=={importlib.metadata.version(distribution)}" in install.split()
