"""Local code as projects lay it out reaches the image whole: a package's submodules and
what they import, and namespace packages (the fake builds the image, so a miss fails as it
would on Modal)."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from agex import Agent, connect_host
from agex.remote import dependencies
from agex.testing.host import scripted


def _agent(fn):
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        llm=scripted("task_success(go('[b]\\n[a]\\n'))"),
    )
    agent.fn(fn, name="go")

    @agent.task
    def listed() -> list:
        """List."""

    return agent, listed


@pytest.fixture
def cleanup():
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("revpkg"):
            sys.modules.pop(name, None)


def test_a_package_submodule_imports_a_third_party_package(fake, tmp_path, monkeypatch, cleanup):
    """revpkg/tools.py imports revpkg/parse.py, which imports iniconfig (from an index):
    neither the registration's module nor the package's __init__ names it."""
    pkg = tmp_path / "revpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "parse.py").write_text(
        "import iniconfig\n\ndef sections(text):\n"
        "    return sorted(iniconfig.IniConfig('x.ini', data=text).sections)\n"
    )
    (pkg / "tools.py").write_text(
        "from revpkg.parse import sections as _s\n\ndef go(text):\n    return _s(text)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tools = importlib.import_module("revpkg.tools")
    agent, listed = _agent(tools.go)
    needed = dependencies.needs(agent)
    assert any(p.startswith("iniconfig==") for p in needed.pins)
    assert listed() == ["a", "b"]


def test_a_namespace_package_of_local_code(fake, tmp_path, monkeypatch, cleanup):
    """revpkgns/ has no __init__.py: its module has a path but no file."""
    pkg = tmp_path / "revpkgns"
    pkg.mkdir()
    (pkg / "tools.py").write_text(
        textwrap.dedent(
            """
            def go(text):
                return sorted(line.strip('[]') for line in text.split() if line)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tools = importlib.import_module("revpkgns.tools")
    agent, listed = _agent(tools.go)
    needed = dependencies.needs(agent)
    assert "revpkgns" in needed.sources
    assert listed() == ["a", "b"]
