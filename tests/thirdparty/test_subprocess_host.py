"""A remote host a third party wrote against agex's public API alone (``agex.remote``,
``agex.hosts``): each task runs in a child process. It meets the same contract as ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agex import Agent, connect_host, connect_state
from agex.testing import HostContract
from agex.testing.host import scripted

SOURCE = Path(__file__).parent / "agex-example-subprocess" / "src" / "agex_example_subprocess"


class TestSubprocessHost(HostContract):
    provider = "subprocess"


class TestSubprocessHostWithVersionedState(TestSubprocessHost):
    """State in the third-party shelf storage, which both processes open by path."""

    def state(self, tmp_path):
        return connect_state(type="versioned", storage="shelf", path=str(tmp_path / "state.json"))


def test_state_committed_in_the_child_is_there_for_the_next_task(tmp_path) -> None:
    llm = scripted("n = 41\ntask_success(n)", "task_success(n + 1)")
    agent = Agent(
        host=connect_host(provider="subprocess"),
        state=connect_state(type="versioned", storage="shelf", path=str(tmp_path / "s.json")),
        llm=llm,
    )

    @agent.task
    def count() -> int:
        """Count."""

    assert count() == 41
    assert count() == 42  # the second reply: the child continued the parent's script


def test_memory_state_is_refused_with_what_to_use() -> None:
    with pytest.raises(ValueError, match="does not share this process's memory"):
        Agent(host=connect_host(provider="subprocess"), state=connect_state(storage="memory"))


def test_it_is_written_in_under_100_lines_of_code_with_only_public_names() -> None:
    lines = 0
    for path in SOURCE.glob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            node.body[0].lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.strip().startswith("#") and number not in docstrings:
                lines += 1
        for node in ast.walk(tree):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if module == "agex" or module.startswith("agex."):
                assert all(not alias.name.startswith("_") for alias in node.names)
                assert module in ("agex", "agex.hosts", "agex.hosts.running"), module
    assert lines < 100
