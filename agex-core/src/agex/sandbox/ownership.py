"""What counts as the agent's own: classes built by agent code, functions compiled from it.

The agent may do as it likes with its own objects (private attributes, writes, decorators
that change them); everything else is the host's and goes through the policy.

A class is the agent's when its ``__dict__`` holds :data:`AGENT` under ``__agex_agent__``:
the marker is this module's object, not a value, so code that can name the key (an enum's
functional API, a copied class dict) still cannot forge it; agent code never gets the object
itself, since it can read no dunder attribute.
"""

from __future__ import annotations

import gc
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any

#: The file name every piece of agent code is compiled under.
AGENT_FILENAME = "<agent>"


class Marker:
    """A trust marker. Pickles by reference, so an agent class stored in versioned state
    comes back marked by this process's marker."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __reduce__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<agex marker {self._name}>"


#: ``__agex_agent__`` of every class a class statement in agent code built.
AGENT = Marker("AGENT")
#: ``__agex_pure__`` of agent classes whose every base is the agent's or a builtin value type:
#: their attribute reads need no check beyond the names the rewriter already refused.
PURE = Marker("PURE")


def agent_class(cls: Any) -> bool:
    """Built by a class statement in agent code (the sandbox marks each one)."""
    return isinstance(cls, type) and cls.__dict__.get("__agex_agent__") is AGENT


def agent_function(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    return code is not None and getattr(code, "co_filename", None) == AGENT_FILENAME


def agent_owned(obj: Any) -> bool:
    """An agent class, an instance of one, or an agent function."""
    return agent_class(obj if isinstance(obj, type) else type(obj)) or agent_function(obj)


#: Values that refer to nothing agent code could have made.
_INERT = (int, float, complex, bool, str, bytes, type(None), ModuleType)
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made at run time, whose dict may hold anything


def agent_code_in(value: Any, limit: int = 1_000_000) -> Any:
    """The first agent class, agent function or instance of an agent class reachable from
    ``value`` (through containers, the objects it refers to, a bound method's object, the
    defaults and closures of host functions, the dicts of classes made at run time: a
    defaultdict's factory, a namedtuple's defaults), or None. A host function's globals are
    the host's and not looked into. Past ``limit`` objects, ``value`` counts as carrying
    some."""
    seen: set[int] = set()
    todo = [value]
    while todo:
        obj = todo.pop()
        if isinstance(obj, _INERT) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > limit:
            return value
        if isinstance(obj, type):
            if agent_class(obj):
                return obj
            if obj.__flags__ & _HEAP_TYPE:
                todo.extend(vars(obj).values())
                todo.extend(obj.__bases__)
            continue
        if agent_class(type(obj)):
            return obj
        if isinstance(obj, FunctionType):
            if obj.__code__.co_filename == AGENT_FILENAME:
                return obj
            cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
            todo.extend([obj.__defaults__, obj.__kwdefaults__, obj.__dict__, *cells])
            continue
        if isinstance(obj, BuiltinFunctionType):
            todo.append(obj.__self__)  # a bound method of a list holding agent code, say
            continue
        todo.append(type(obj))
        todo.extend(gc.get_referents(obj))
    return None


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True
