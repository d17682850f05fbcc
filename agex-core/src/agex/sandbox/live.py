"""Live objects: an instance (a database connection, a client) whose methods agent code may
call, registered with ``agent.module(obj, name="db")``.

Agent code holds a :class:`LiveObject`, never the object: a holder of plain functions, one
per allowed method. Each function calls the bound method it closes over; the closure is out
of reach (agent code reads no dunder attribute), so nothing leads from ``db.query`` to the
object, its class, its other attributes or its module's globals.

A live object stays in this process: it cannot be pickled, so it neither travels to another
machine nor into a worker process (see ``Agent.module``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from agex.errors import AccessDenied


class Live(NamedTuple):
    """What the policy keeps of a live registration: the object's type (as the model is told
    it) and its allowed methods, bound."""

    kind: str
    methods: dict[str, Callable[..., Any]]


def methods_of(obj: Any, allows: Callable[[str], bool]) -> dict[str, Callable[..., Any]]:
    """The bound methods of ``obj`` whose names ``allows``: functions and method descriptors
    of its class (or itself), never properties or data, which are read, not called."""
    found = {}
    for attr in sorted(dir(obj)):
        if not allows(attr):
            continue
        try:
            member = inspect.getattr_static(obj, attr)
        except AttributeError:
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if not (inspect.isroutine(member) or inspect.ismethoddescriptor(member)):
            continue
        bound = getattr(obj, attr)
        if callable(bound):
            found[attr] = bound
    return found


class LiveObject:
    """What agent code holds for a live object: its allowed methods, by name."""

    __slots__ = ("_kind", "_members", "_name")

    def __init__(self, obj: Any, name: str, live: Live) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_kind", live.kind)
        members = {attr: _calling(self, obj, attr, m) for attr, m in live.methods.items()}
        object.__setattr__(self, "_members", members)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # protocol probes (copy, pickle); and no member is private
            raise AttributeError(attr)
        members = self._members
        try:
            return members[attr]
        except KeyError:
            raise AccessDenied(
                f"{self._name}.{attr} is not available to agent code; {self._name} offers "
                + (", ".join(sorted(members)) or "no methods")
            ) from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AccessDenied(f"{self._name} is a live object: its attributes cannot be set")

    def __delattr__(self, attr: str) -> None:
        raise AccessDenied(f"{self._name} is a live object: its attributes cannot be deleted")

    def __dir__(self) -> list[str]:
        return sorted(self._members)

    def __repr__(self) -> str:
        return f"<live {self._kind} {self._name}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"{self._name} is a live object ({self._kind}): it stays in the process that "
            "registered it and cannot be copied to another process or machine; run the agent "
            'here, on the local host with isolation="none", or register functions that open '
            "their own connection where the agent runs"
        )


def _calling(view: LiveObject, obj: Any, attr: str, method: Callable[..., Any]) -> Any:
    """A plain function calling ``method``: what ``db.attr`` is in agent code. A method that
    returns its own object (a fluent API) gives agent code the view again, not the object;
    one that returns it inside a list, tuple, dict or set is refused."""

    def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if result is obj:
            return view
        if isinstance(result, _CONTAINERS) and _holds(result, obj, 0):
            raise AccessDenied(
                f"{view._name}.{attr}() returned a {type(result).__name__} holding "
                f"{view._name} itself (or nested too deeply to check), and agent code gets "
                f"{view._name} only as registered: return it alone, or plain data"
            )
        return result

    call.__name__ = attr  # its qualified name stays local: state refuses to store it
    call.__doc__ = inspect.getdoc(method)
    return call


_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})


def _holds(container: Any, obj: Any, depth: int) -> bool:
    """Whether ``obj`` is in ``container`` or in the containers it holds (too deep counts)."""
    if depth > 20:
        return True
    items = [*container.keys(), *container.values()] if isinstance(container, dict) else container
    for item in items:
        if item is obj:
            return True
        if (
            type(item) not in _SCALARS
            and isinstance(item, _CONTAINERS)
            and _holds(item, obj, depth + 1)
        ):
            return True
    return False


def kind_of(obj: Any) -> str:
    """The type of ``obj`` as the model is told it."""
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def check_live(obj: Any, name: str | None) -> str:
    """The name a live object is registered under, or an error saying what to pass instead."""
    if isinstance(obj, type):
        raise TypeError(
            f"module() registers modules and live objects; {obj.__name__} is a class: "
            "register it with agent.cls(...)"
        )
    if obj is None:
        raise TypeError("module() registers modules and live objects; got None")
    if inspect.isroutine(obj):
        raise TypeError(
            f"module() registers modules and live objects; {getattr(obj, '__name__', obj)!r} "
            "is a function: register it with agent.fn(...)"
        )
    if name is None:
        raise ValueError(
            f"a live object ({kind_of(obj)}) needs the name agent code calls it by: "
            'agent.module(obj, name="db")'
        )
    return name
