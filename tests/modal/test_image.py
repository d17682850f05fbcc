"""The fake's containers hold what the image would, and nothing of the test process: a
missing entry point, module or package fails here as it would on Modal."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from pathlib import Path

import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError
from agex.remote import dependencies
from agex.testing.host import scripted
from agex_host_modal import app


def memory_agent():
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=connect_state(type="versioned", storage="memory"),
        llm=scripted("x = 41", "task_success(x + 1)"),
    )

    @agent.task
    def answer() -> int:
        """Answer."""

    return answer


def test_plugins_resolve_in_the_container_through_the_shipped_metadata(fake):
    """agex travels as source (it is installed from a folder here); its storages are found
    in the container only because the image carries its distributions' metadata."""
    shipped = dependencies.needs(memory_agent().agent)
    assert "agex_host_modal" in shipped.sources
    assert any(folder.name.startswith("agex_host_modal-") for folder in shipped.metadata)
    assert memory_agent()() == 42


def test_an_image_without_the_metadata_fails_as_modal_would(fake, monkeypatch):
    monkeypatch.setattr(app, "_not_metadata", lambda path: True)  # ship the folders empty
    with pytest.raises((RemoteExecutionError, ImportError), match=r"modal-dict.*not installed"):
        memory_agent()()


@pytest.fixture
def local_tool(tmp_path, monkeypatch):
    """A module of the user's own, on sys.path but in no distribution, that imports a
    package installed from an index."""
    (tmp_path / "agex_local_tool.py").write_text(
        textwrap.dedent(
            """
            import iniconfig

            def sections(text):
                return sorted(iniconfig.IniConfig("x.ini", data=text).sections)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("agex_local_tool")
    yield module
    sys.modules.pop("agex_local_tool", None)


def test_local_code_travels_with_what_it_imports(fake, local_tool):
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        llm=scripted("task_success(sections('[b]\\n[a]\\n'))"),
    )
    agent.fn(local_tool.sections)

    @agent.task
    def listed() -> list:
        """List."""

    needed = dependencies.needs(agent)
    assert "agex_local_tool" in needed.sources
    assert any(pin.startswith("iniconfig==") for pin in needed.pins)
    assert listed() == ["a", "b"]


def test_the_container_sees_only_the_secrets_and_what_modal_sets(fake, monkeypatch):
    monkeypatch.setenv("AGEX_CALLER_ONLY", "here")
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        llm=scripted("task_success(seen())"),
    )
    agent.fn(lambda: sorted(os.environ), name="seen")

    @agent.task
    def environment() -> list:
        """Environment."""

    assert "AGEX_TEST_SECRET" not in environment()  # agent code: a confined worker
    (container,) = fake.containers
    raw = Path(f"/proc/{container.process.pid}/environ").read_bytes()
    seen = dict(item.split(b"=", 1) for item in raw.split(b"\0") if item)
    assert seen[b"AGEX_TEST_SECRET"] == b"from-the-secret"
    assert seen[b"MODAL_IS_REMOTE"] == b"1"
    assert b"AGEX_CALLER_ONLY" not in seen
    assert "AGEX_TEST_SECRET" not in os.environ  # nor did the secret reach the caller


def test_a_task_defined_in_a_module_travels_with_its_module(fake, tmp_path, monkeypatch):
    """A task function at a module's top level is pickled by reference: its module, and
    the modules of the types it returns, must be in the image."""
    (tmp_path / "agex_local_tasks.py").write_text(
        textwrap.dedent(
            '''
            import dataclasses

            from agex import Agent, connect_host
            from agex.testing.host import scripted

            @dataclasses.dataclass
            class Point:
                x: int
                y: int

            agent = Agent(
                host=connect_host(provider="modal", secrets="llm-keys"),
                llm=scripted("task_success(Point(1, 2))"),
            )
            agent.cls(Point)

            @agent.task
            def point() -> Point:
                """A point."""
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("agex_local_tasks")
    try:
        assert module.point() == module.Point(1, 2)
    finally:
        sys.modules.pop("agex_local_tasks", None)
