"""No forbidden object is reachable from agent code, however the ways in are combined.

test_security.py holds one hand-written test per known escape. This test composes *access
forms* (``x.name``, ``getattr``, ``str.format``, ``match`` patterns, imports, indexing,
zero-argument calls, iteration, ``type(x)``, a state round-trip) into chains of one to four
steps, starting from a corpus of objects agent code may hold. Each step is agent code run in
the sandbox; after each one the test looks at the namespace from the host, and fails if a
variable, or anything in a list, tuple, dict or set it holds (a few levels down), is a
forbidden object: a builtin the sandbox never hands out, a real module, a frame, code object,
traceback or cell, a module's ``__dict__``, ``object.__subclasses__``, or the real class behind
a ``constructable=False`` registration.

Hypothesis picks the starting point, the forms and the names, from what ``dir()`` shows of
the value the chain has reached; a failure reports the chain as one piece of agent code.
"""

from __future__ import annotations

import builtins
import inspect
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agex.sandbox import Policy, Sandbox
from agex.sandbox.stdlib import SAFE_MODULES
from agex.state.pickling import AgentStateSerializer, loading_into

from . import corpus, tools

# -- the policy, and where chains start ---------------------------------------------------


def make_policy() -> Policy:
    """One registration of each kind the sandbox treats differently."""
    policy = Policy()
    policy.module(tools, exclude=["_*", "delete_everything"])
    policy.cls(tools.Account, exclude=["_*", "close"])
    policy.cls(corpus.Vault, constructable=False)
    policy.cls(corpus.Record, exclude=["_*", "backend"])
    policy.fn(corpus.make_holder)
    policy.fn(corpus.make_record)
    policy.fn(corpus.open_vault)
    return policy


POLICY = make_policy()
SANDBOX = Sandbox(POLICY)
#: What agent code sees as ``Vault``: a stand-in whose members are the real class's.
VAULT_STAND_IN = SANDBOX.namespace()["Vault"]

#: Starting points by kind: agent code binding ``v0`` to something it may hold.
STARTS: dict[str, list[str]] = {
    "builtins": [f"v0 = {name}" for name in sorted(SANDBOX.builtins) if not name.startswith("_")],
    "stdlib": [f"import {name} as v0" for name in sorted(SAFE_MODULES)],
    "registered": [
        f"import {tools.__name__} as v0",
        "v0 = Account",
        "v0 = Account('ann')",
        "v0 = Vault",
        "v0 = Record",
        "v0 = make_holder",
    ],
    "host objects": [
        "v0 = make_holder()",
        "v0 = make_record()",
        "v0 = open_vault()",
        "import re\nv0 = re.I",
        "import re\nv0 = re.compile('a+')",
    ],
    "errors": [
        "try:\n    1 / 0\nexcept Exception as e:\n    v0 = e",
        "try:\n    getattr(1, '__class__')\nexcept Exception as e:\n    v0 = e",
        "try:\n    import os\nexcept Exception as e:\n    v0 = e",
        "try:\n    make_holder().explode()\nexcept Exception as e:\n    v0 = e",
        "try:\n    Vault()\nexcept Exception as e:\n    v0 = e",
    ],
}

# -- what agent code must never hold -------------------------------------------------------

_NEVER_HANDED_OUT = [
    *("eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr"),
    *("type", "globals", "locals", "vars", "breakpoint", "input"),
]
#: Forbidden by identity: id -> what it is.
FORBIDDEN = {
    **{id(getattr(builtins, name)): f"the real builtin {name}" for name in _NEVER_HANDED_OUT},
    id(type.__dict__["__subclasses__"]): "type.__subclasses__",
}
#: The interpreter's insides.
INTERNALS = (types.FrameType, types.CodeType, types.TracebackType, types.CellType)
#: How ``object.__subclasses__`` looks, bound or unbound.
_BUILTIN_METHODS = (
    types.BuiltinMethodType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
)
#: Looked into for forbidden elements.
CONTAINERS = (
    *(list, tuple, set, frozenset, dict, types.MappingProxyType),
    *(type({}.keys()), type({}.values()), type({}.items())),
)


def why_forbidden(value: Any, modules: set[int], module_dicts: set[int]) -> str | None:
    """What ``value`` is, if agent code must never hold it."""
    cls = type(value)
    if id(value) in FORBIDDEN:
        return FORBIDDEN[id(value)]
    if isinstance(value, types.ModuleType) and (
        id(value) in modules or sys.modules.get(value.__name__) is value
    ):
        return f"the real module {value.__name__!r}"
    if isinstance(value, type) and issubclass(value, corpus.Vault):
        # Registered with constructable=False; a real subclass constructs one just the same.
        return f"the real {value.__name__}, not constructable in agent code"
    if isinstance(value, INTERNALS):
        return f"a {cls.__name__}"
    if cls in _BUILTIN_METHODS and value.__name__ == "__subclasses__":
        return "object.__subclasses__"
    if cls is dict and id(value) in module_dicts:
        return "a module's __dict__"
    return None


def forbidden_in(namespace: dict[str, Any]) -> list[str]:
    """Every forbidden object among the namespace's variables, and where it sits."""
    loaded = [m for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)]
    modules, module_dicts = {id(m) for m in loaded}, {id(m.__dict__) for m in loaded}
    found = []

    def visit(value: Any, where: str, depth: int) -> None:
        why = why_forbidden(value, modules, module_dicts)
        if why:
            found.append(f"{where}: {why}")
        elif depth < 3 and isinstance(value, CONTAINERS):
            items = value.items() if isinstance(value, dict | types.MappingProxyType) else value
            for index, item in enumerate(list(items)[:50]):
                visit(item, f"{where}[{index}]", depth + 1)

    for name, value in namespace.items():
        if name not in ("__builtins__", "__name__"):
            visit(value, name, 0)
    return found


# -- what the chain can see of a value -------------------------------------------------------


def names_of(value: Any) -> list[str]:
    """The attribute names agent code would try: what ``dir()`` shows, and for the sealed
    stand-in, those of the class behind it (they are what its documentation shows)."""
    try:
        names = set(dir(value))
    except Exception:
        return []
    if value is VAULT_STAND_IN:
        names |= set(dir(corpus.Vault))
    return sorted(names)


def public_names(value: Any) -> list[str]:
    return [name for name in names_of(value) if not name.startswith("_")]


def takes_no_arguments(func: Any) -> bool:
    if not callable(func):
        return False
    try:
        inspect.signature(func).bind()
    except TypeError:
        return False
    except ValueError:  # no signature to read: worth a try
        return True
    return True


def zero_argument_methods(value: Any) -> list[str]:
    """Public methods of ``value`` that can be called with no arguments."""

    def member(name: str) -> Any:
        try:
            return getattr(value, name)
        except Exception:
            return None

    return [name for name in public_names(value) if takes_no_arguments(member(name))]


def import_guesses(module: types.ModuleType) -> list[str]:
    """Names to try in ``from M import name`` that reading ``M.name`` would not give: the
    real module's public names its view leaves out, and its loaded submodules."""
    real = sys.modules.get(module.__name__)
    prefix = module.__name__ + "."
    children = {
        name[len(prefix) :]
        for name in list(sys.modules)
        if name.startswith(prefix) and "." not in name[len(prefix) :]
    }
    hidden = set(dir(real)) - set(dir(module)) if real is not None else set()
    return sorted(name for name in hidden | children if not name.startswith("_"))


def match_positions(value: Any) -> int:
    """How many positional sub-patterns ``case C(...)`` can take for ``value``'s class."""
    cls = type(value)
    if cls in (bool, bytearray, bytes, dict, float, frozenset, int, list, set, str, tuple):
        return 1  # these match the subject itself
    args = getattr(cls, "__match_args__", ())
    return len(args) if isinstance(args, tuple) else 0


def is_iterable(value: Any) -> bool:
    return hasattr(type(value), "__iter__") or (
        isinstance(value, type) and hasattr(value, "__iter__")
    )


def pick(data: st.DataObject, choices: list[Any], label: str) -> Any:
    """One of ``choices``. They come from ``dir()`` and ``sys.modules``, which grow as the
    process runs, so the draw is an index whose range does not depend on them (hypothesis
    replays a draw only if its range is the same)."""
    return choices[data.draw(st.integers(0, 255), label=label) % len(choices)]


# -- access forms --------------------------------------------------------------------------

#: Not agent code: the namespace goes through a state round-trip here.
ROUND_TRIP = "# (the state is saved, then loaded into a fresh namespace)"


@dataclass(frozen=True)
class Form:
    """One way agent code gets from a value to another: ``write(value, src, dst, data)`` is
    agent code that reads the variable ``src`` (holding ``value``) and binds ``dst``."""

    name: str
    applies: Callable[[Any], bool]
    write: Callable[[Any, str, str, st.DataObject], str]


def attribute(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"{dst} = {src}.{pick(data, public_names(value), 'name')}"


def getattr_call(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"{dst} = getattr({src}, {pick(data, names_of(value), 'name')!r})"


def format_field(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    name = pick(data, public_names(value), "name")
    if data.draw(st.booleans(), label="format_map"):
        return f"{dst} = '{{m.{name}!r}}'.format_map({{'m': {src}}})"
    return f"{dst} = '{{0.{name}}}'.format({src})"


def match_object_keyword(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    name = pick(data, public_names(value), "name")
    return f"match {src}:\n    case object({name}={dst}):\n        pass"


def match_class_keyword(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    name = pick(data, public_names(value), "name")
    return f"C = type({src})\nmatch {src}:\n    case C({name}={dst}):\n        pass"


def match_class_positional(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    position = pick(data, list(range(match_positions(value))), "position")
    patterns = ", ".join(["_"] * position + [dst])
    return f"C = type({src})\nmatch {src}:\n    case C({patterns}):\n        pass"


def from_import(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"from {value.__name__} import {pick(data, import_guesses(value), 'name')} as {dst}"


def import_dotted(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"import {value.__name__}.{pick(data, import_guesses(value), 'name')} as {dst}"


def index(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    if isinstance(value, dict | types.MappingProxyType):
        keys = list(value)
        key = pick(data, keys, "key")
        if type(key) in (str, int):
            return f"{dst} = {src}[{key!r}]"
        return f"{dst} = list({src}.values())[{keys.index(key)}]"
    return f"{dst} = {src}[{pick(data, list(range(len(value))), 'index')}]"


def call_method(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"{dst} = {src}.{pick(data, zero_argument_methods(value), 'method')}()"


def call(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"{dst} = {src}()"


def iterate(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    """The first few items: enough to see what it holds, and it may never end."""
    loop = f"for item in {src}:\n    {dst}.append(item)\n    if len({dst}) == 5:\n        break"
    return f"{dst} = []\n{loop}"


def type_of(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return f"{dst} = type({src})"


def round_trip(value: Any, src: str, dst: str, data: st.DataObject) -> str:
    return ROUND_TRIP


def _is_module_with_guesses(value: Any) -> bool:
    return isinstance(value, types.ModuleType) and bool(import_guesses(value))


def _is_indexable(value: Any) -> bool:
    return isinstance(value, list | tuple | dict | types.MappingProxyType) and len(value) > 0


#: Forms within one live namespace.
LIVE_FORMS = [
    Form("attribute", lambda v: bool(public_names(v)), attribute),
    Form("getattr", lambda v: bool(names_of(v)), getattr_call),
    Form("format", lambda v: bool(public_names(v)), format_field),
    Form("match object(name=...)", lambda v: bool(public_names(v)), match_object_keyword),
    Form("match C(name=...)", lambda v: bool(public_names(v)), match_class_keyword),
    Form("match C(...)", lambda v: match_positions(v) > 0, match_class_positional),
    Form("from M import name", _is_module_with_guesses, from_import),
    Form("import M.name", _is_module_with_guesses, import_dotted),
    Form("index", _is_indexable, index),
    Form("call a method", lambda v: bool(zero_argument_methods(v)), call_method),
    Form("call", takes_no_arguments, call),
    Form("iterate", is_iterable, iterate),
    Form("type", lambda v: True, type_of),
]
#: The same, and the state saved and loaded between steps.
STORED_FORMS = [*LIVE_FORMS, Form("state round-trip", lambda v: True, round_trip)]


def forms_for(value: Any, forms: list[Form]) -> list[Form]:
    applicable = []
    for form in forms:
        try:
            if form.applies(value):
                applicable.append(form)
        except Exception:
            continue
    return applicable


# -- running chains ------------------------------------------------------------------------


class Chain:
    """Agent code run step by step in one namespace. ``source`` is the steps that bound
    their variable: the chain so far, as one piece of agent code."""

    def __init__(self) -> None:
        self.namespace = SANDBOX.namespace()
        self.source: list[str] = []
        self.steps = 0

    @property
    def current(self) -> str:
        return f"v{self.steps - 1}"

    def reached(self) -> bool:
        """Whether the chain holds a value to go on from (a round-trip may drop it)."""
        return self.steps > 0 and self.current in self.namespace

    def step(self, code: str) -> None:
        """Run one step; if it binds its variable, the chain goes on from there."""
        if code == ROUND_TRIP:
            self.round_trip()
            self.source.append(code)
            return
        # No timeout: see the settings of the test below.
        result = SANDBOX.run(code, self.namespace)
        self.check(code)
        assert not isinstance(result.exception, AssertionError), (  # tools.py's tripwires
            f"agent code ran an excluded member:\n{self.program(code)}\n{result.error}"
        )
        if f"v{self.steps}" in self.namespace:
            self.source.append(code)
            self.steps += 1

    def round_trip(self) -> None:
        """What versioned state does between two steps: each variable pickled on its own
        (one that cannot be is left behind) and loaded into a fresh namespace."""
        serializer = AgentStateSerializer()
        saved = {}
        for name, value in self.namespace.items():
            if name.startswith(("__", "_agex")) or POLICY.names.get(name) is value:
                continue
            try:
                saved[name] = serializer.dumps(value)
            except Exception:
                continue
        fresh = SANDBOX.namespace()
        with loading_into(fresh):
            for name, blob in saved.items():
                try:
                    fresh[name] = serializer.loads(blob)
                except Exception:
                    continue
        self.namespace = fresh
        self.check(ROUND_TRIP)

    def check(self, code: str) -> None:
        found = forbidden_in(self.namespace)
        assert not found, "agent code reached " + "; ".join(found) + ":\n" + self.program(code)

    def program(self, last: str) -> str:
        return "\n".join([*self.source, last])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # typing.io, typing.re
@pytest.mark.parametrize("forms", [LIVE_FORMS, STORED_FORMS], ids=["live", "stored"])
@pytest.mark.parametrize("kind", list(STARTS))
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    # Not Phase.explain: it reruns a failing example under sys.settrace, and on CPython
    # 3.11 that spins forever at the next call once a Sandbox.run(timeout=...) in this
    # thread has disarmed its watch (PyThreadState_SetAsyncExc(id, NULL) leaves the eval
    # breaker set), as other tests' runs have. The steps run without a timeout likewise.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_forbidden_object_is_reachable(
    kind: str, forms: list[Form], data: st.DataObject
) -> None:
    chain = Chain()
    chain.step(data.draw(st.sampled_from(STARTS[kind]), label="start"))
    assert chain.reached(), f"the starting point did not run:\n{chain.program('')}"
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        if not chain.reached():
            break
        value = chain.namespace[chain.current]
        form = pick(data, forms_for(value, forms), "form")
        chain.step(form.write(value, chain.current, f"v{chain.steps}", data))
