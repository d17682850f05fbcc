"""An init value must not hand agent code what the sandbox keeps from it, one step away:
``eval`` behind a ``functools.partial``, a closure, a generator or iterator, inside a
``deque``, a ``mappingproxy``, a dict's ``.values()``, a ``defaultdict``'s factory, a bound
``dict.get``; the bound ``object.__subclasses__`` (every class in the process); plain
``os.system`` and ``subprocess.Popen``. Each is refused, naming the variable, before the
model is asked. Data, registrations and the builtins agent code has anyway still pass."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import functools
import itertools
import os
import subprocess
import types
from typing import Any

import pytest

from agex import Agent, connect_state
from agex.errors import StateLoadError
from agex.testing.host import scripted

CASES = {
    "partial-of-eval": (lambda: functools.partial(builtins.eval), "v('6*7')"),
    "closure-returning-eval": (lambda: lambda: builtins.eval, "v()('6*7')"),
    "generator-yielding-eval": (lambda: (x for x in [builtins.eval]), "next(v)('6*7')"),
    "iterator-over-eval": (lambda: itertools.chain([builtins.eval]), "next(v)('6*7')"),
    "deque-of-eval": (lambda: collections.deque([builtins.eval]), "v[0]('6*7')"),
    "mappingproxy-of-eval": (lambda: types.MappingProxyType({"e": builtins.eval}), "v['e']('6*7')"),
    "dict-values-of-eval": (lambda: {"e": builtins.eval}.values(), "list(v)[0]('6*7')"),
    "defaultdict-factory-eval": (
        lambda: collections.defaultdict(lambda: builtins.eval),
        "v['x']('6*7')",
    ),
    "bound-get-of-a-dict-holding-eval": (lambda: {"e": builtins.eval}.get, "v('e')('6*7')"),
    "object-subclasses": (
        lambda: object.__subclasses__,
        "v()\nfor c in v():\n    if c.__name__ == 'Popen':\n        task_success(42)",
    ),
    "os-system": (lambda: os.system, "v('true') or 42"),
    "subprocess-popen": (lambda: subprocess.Popen, "v(['true']).wait() or 42"),
    "coroutine": (lambda: _coroutine(), "42"),
    "deque-of-a-module": (lambda: collections.deque([os]), "v[0].getcwd() and 42"),
    "ordered-dict-in-a-deque-of-eval": (
        lambda: collections.deque([collections.OrderedDict(e=builtins.eval)]),
        "v[0]['e']('6*7')",
    ),
}


async def _waiting() -> None:
    """A coroutine function, whose call is what an init may hold."""


def _coroutine() -> Any:
    coroutine = _waiting()
    coroutine.close()  # never awaited: closed so that no warning is left behind
    return coroutine


def going(values: dict[str, Any], code: str, **options: Any) -> Any:
    agent = Agent(
        name="init-reach",
        state=connect_state(type="ephemeral", init=lambda: values),
        llm=scripted(code, "task_fail('no way through')"),
        max_iterations=2,
        **options,
    )

    @agent.task("Go.")
    def go() -> object: ...

    return go


@pytest.mark.parametrize("case", sorted(CASES))
def test_init_cannot_hand_agent_code_eval_one_step_away(case: str) -> None:
    make, expression = CASES[case]
    code = expression if "\n" in expression else f"task_success({expression})"
    go = going({"v": make()}, code)
    with pytest.raises(StateLoadError, match="variable 'v', which it may not have") as caught:
        go()
    assert "init['v']" in str(caught.value)
    assert go.agent.llm.position == 0  # refused before the model was asked


def test_the_error_says_where_the_value_is_and_what_to_do() -> None:
    go = going({"v": collections.deque([1, {"ok": 2, "run": functools.partial(print)}])}, "1")
    with pytest.raises(StateLoadError) as caught:
        go()
    message = str(caught.value)
    assert "init['v'][1]['run'] is a functools.partial" in message
    assert "register it (agent.fn, agent.cls)" in message


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_data_registrations_and_the_builtins_agent_code_has_still_pass() -> None:
    def double(n: int) -> int:
        return 2 * n

    values = {
        "counts": collections.defaultdict(list, {"a": [1, 2]}),
        "recent": collections.deque([Point(1, 2), Point(3, 4)], maxlen=5),
        "table": types.MappingProxyType({"k": (1.5, "s", None)}),
        "size": len,
        "twice": double,
        "kind": Point,
        "ordered": collections.OrderedDict(b=2, a=1),
    }
    code = (
        "counts['b'].append(size([1, 2, 3]))\n"
        "task_success([counts['a'], counts['b'], recent[1].y, table['k'][0], twice(21),"
        " kind(5, 6).x, list(ordered)])"
    )
    go = going(values, code)
    go.agent.fn(double, name="doubler")
    go.agent.cls(Point)
    assert go() == [[1, 2], [3], 4, 1.5, 42, 5, ["b", "a"]]


def test_a_subclass_cannot_hide_its_items_behind_its_own_iteration() -> None:
    """The walk reads a container's storage, not what its overridden ``__iter__`` shows."""

    class Quiet(list):
        def __iter__(self) -> Any:
            return iter([])

    go = going({"v": Quiet([builtins.eval])}, "task_success(v[0]('6*7'))")
    with pytest.raises(StateLoadError, match=r"init\['v'\]"):
        go()
    assert go.agent.llm.position == 0
