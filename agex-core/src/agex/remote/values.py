"""A task's value across a remote boundary, in a form that cannot run code where it lands.

The far side pickles the value with plain pickle, naming the classes the task's return
annotation names by module and qualified name without importing them. The caller
loads it with a loader that admits only those classes (found in its own annotation, so a
class the caller defined in a script is the caller's own), builtin containers and scalars,
and a few standard value types; any other name in the bytes (a function to call, a module to
import) is refused before anything is built, with an error naming it.

So a server, or anything that answers at its address, can at worst send back a wrong value
of the annotated types: never run code in the caller.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import typing
from typing import Any

#: What the bytes may name besides the annotation's classes, by (module, name) as pickle
#: names them. Lists, tuples, dicts, sets, strings, bytes and numbers have opcodes of their
#: own and need no name: only types that rebuild by a call are here, and only those whose
#: call cannot be made to cost more than its arguments (so not ``bytes``, ``bytearray`` or
#: ``list``, which a tiny call could make enormous, nor ``Fraction``, which parses
#: exponents).
SAFE = {
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("collections", "OrderedDict"),
    ("collections", "deque"),
    ("collections", "Counter"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "datetime"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("uuid", "UUID"),
    # How pickle rebuilds an instance of a class without a reduce of its own: it calls only
    # ``cls.__new__(cls)`` (or object.__new__) on a class this loader admitted.
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}

_TAG = "agex-type"


class RefusedValue(pickle.UnpicklingError):
    """The value names something its task's return annotation does not."""


def named_types(annotation: Any) -> list[type]:
    """The classes an annotation names, with those its dataclasses', attrs classes',
    NamedTuples' and TypedDicts' fields name."""
    found: list[type] = []
    _walk(annotation, found, set())
    return found


def _walk(annotation: Any, found: list[type], seen: set[int]) -> None:
    if id(annotation) in seen:
        return
    seen.add(id(annotation))
    for arg in typing.get_args(annotation):
        _walk(arg, found, seen)
    origin = typing.get_origin(annotation)
    if origin is not None:
        return  # list[X], X | None, Literal[...]: what it holds was walked above
    if isinstance(annotation, typing.NewType):
        _walk(annotation.__supertype__, found, seen)
        return
    if not isinstance(annotation, type) or annotation.__module__ == "builtins":
        return
    found.append(annotation)
    if (
        dataclasses.is_dataclass(annotation)
        or hasattr(annotation, "__attrs_attrs__")
        or (issubclass(annotation, tuple) and hasattr(annotation, "_fields"))
        or typing.is_typeddict(annotation)
    ):
        try:
            hints = typing.get_type_hints(annotation)
        except Exception:  # an unresolvable field type: its values stay plain
            hints = {}
        for hint in hints.values():
            _walk(hint, found, seen)


def dumps(value: Any, annotation: Any) -> bytes:
    """The bytes :func:`loads` rebuilds ``value`` from, on the caller's side."""
    named = {id(cls) for cls in named_types(annotation)}
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, named)
    try:
        pickler.dump(value)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"the task's value cannot be sent back: {exc}. A remote task returns plain data "
            "and instances of the classes its return annotation names"
        ) from None
    return buffer.getvalue()


def loads(data: bytes, annotation: Any) -> Any:
    """The value :func:`dumps` sent, rebuilt with only what ``annotation`` admits."""
    return _Unpickler(io.BytesIO(data), named_types(annotation)).load()


class _Pickler(pickle.Pickler):
    """Names the annotation's classes by module and qualified name without importing them:
    a class that reached this side by value (defined in the caller's script) cannot be
    imported here, and the caller has its own."""

    def __init__(self, file: io.BytesIO, named: set[int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._named = named

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type) and id(obj) in self._named:
            return (_TAG, obj.__module__, obj.__qualname__)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, named: list[type]) -> None:
        super().__init__(file)
        self._by_name = {(cls.__module__, cls.__qualname__): cls for cls in named}

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 3 and pid[0] == _TAG:
            named = self._by_name.get((pid[1], pid[2]))
            if named is not None:
                return named
        raise RefusedValue(
            f"the value names a class {pid!r} the task's return annotation does not name"
        )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE:
            return super().find_class(module, name)
        named = self._by_name.get((module, name))
        if named is not None:
            return named
        raise RefusedValue(
            f"the value holds {module}.{name}, which the task's return annotation does not "
            "name, and was not loaded: a remote task's value holds plain data and instances of "
            "the classes its return annotation names (name the class there if the task "
            "returns it)"
        )


__all__ = ["SAFE", "RefusedValue", "dumps", "loads", "named_types"]
