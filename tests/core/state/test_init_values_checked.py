"""init is the host handing values to agent code, so its values get the check the sandbox
gives a value read from a host object's attribute: the builtins agent code may not use
(``open``, ``eval``, the real ``type``), also inside a dict or list, and modules outside the
policy are refused with an error naming the variable, in this process and in a worker."""

from __future__ import annotations

import builtins
import math
import os
from typing import Any

import pytest

from agex import Agent, connect_state
from agex.errors import StateLoadError
from agex.isolation import strongest
from agex.state.live import forget
from agex.testing.host import scripted

ISOLATED = strongest()
needs_workers = pytest.mark.skipif(ISOLATED == "none", reason="no worker processes here")

ARMED = [
    ({"reader": builtins.open}, "task_success(reader('/etc/hostname').read())", "reader"),
    ({"run": builtins.eval}, "task_success(run('6*7'))", "run"),
    ({"tools": {"run": builtins.eval}}, "task_success(tools['run']('6*7'))", "tools"),
    ({"kinds": [1, [builtins.type]]}, "task_success(kinds[1][0]('X', (), {}))", "kinds"),
    ({"make": builtins.type}, "task_success(make('X', (), {}))", "make"),
    ({"system": os}, "task_success(system.getcwd())", "system"),
]
ARMED_IDS = ["open", "eval", "eval-in-a-dict", "type-in-a-list", "type", "module-os"]


def going(state: Any, *codes: str, **options: Any) -> Any:
    agent = Agent(name="armed", state=state, llm=scripted(*codes), max_iterations=2, **options)

    @agent.task("Go.")
    def go() -> object: ...

    return go


@pytest.mark.parametrize(("values", "code", "name"), ARMED, ids=ARMED_IDS)
def test_init_cannot_hand_agent_code_a_banned_builtin(values: Any, code: str, name: str) -> None:
    go = going(connect_state(type="ephemeral", init=lambda: values), code, "task_fail('x')")
    with pytest.raises(StateLoadError, match=f"variable {name!r}, which it may not have") as caught:
        go()
    assert "leave it out of init, or register" in str(caught.value)
    assert go.agent.llm.position == 0  # refused before the model was asked


@pytest.mark.parametrize("kind", ["versioned", "live", "ephemeral"])
def test_a_dict_init_is_checked_on_every_state_type(kind: str) -> None:
    forget("armed")
    state = connect_state(type=kind, init={"ok": [1, "a"], "tools": {"run": builtins.eval}})
    go = going(state, "task_success(tools['run']('6*7'))")
    try:
        with pytest.raises(StateLoadError, match=r"an item of init\['tools'\] is a builtin"):
            go(session="armed")
        if kind == "versioned":
            assert go.agent.state("armed").head() is None  # nothing was committed
    finally:
        forget("armed")


def test_a_module_in_init_is_given_as_agent_code_would_import_it() -> None:
    """Allowed modules reach agent code as the same views ``import`` gives it."""
    go = going(
        connect_state(type="ephemeral", init=lambda: {"m": math}), "task_success(m.sqrt(16))"
    )
    assert go() == 4.0


def test_values_agent_code_may_have_pass_unchanged() -> None:
    go = going(
        connect_state(type="ephemeral", init=lambda: {"rows": [{"n": 1}, (2, {3})], "len_": len}),
        "task_success([rows, len_(rows)])",
    )
    assert go() == [[{"n": 1}, (2, {3})], 2]


def armed_in_a_worker() -> dict[str, Any]:
    return {"tools": {"run": builtins.eval}}


@needs_workers
def test_init_values_are_checked_in_the_worker_too(ship_test_module: None) -> None:
    go = going(
        connect_state(type="versioned", init=armed_in_a_worker),
        "task_success(tools['run']('6*7'))",
        isolation=ISOLATED,
    )
    with pytest.raises(StateLoadError, match=r"variable 'tools'.*an item of init\['tools'\]"):
        go(session="armed-worker")
    assert go.agent.state("armed-worker").head() is None
