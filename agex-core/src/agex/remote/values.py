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
import decimal
import io
import pickle
import pickletools
import typing
from typing import Any

#: What the bytes may name besides the annotation's classes, by (module, name) as pickle
#: names them. Lists, tuples, dicts, sets, strings, bytes and numbers have opcodes of their
#: own and need no name: only types that rebuild by a call are here, and only those whose
#: call cannot be made to cost more than its arguments (so not ``bytes``, ``bytearray``,
#: ``list`` or ``range``, which a tiny call could make enormous, nor ``Fraction``, which
#: parses exponents). Instances of other classes rebuild with ``NEWOBJ`` (protocol 2 and
#: later), which needs no helper.
SAFE = {
    ("builtins", "complex"),
    ("builtins", "slice"),
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
}
#: Longest text a Decimal is rebuilt from (its pickle is its text).
DECIMAL_TEXT = 1000
#: Deepest nesting, and most objects counted with every shared one as often as it is used,
#: per byte of the value plus a floor: hashing or printing a value costs about that.
MAX_DEPTH = 100
WEIGHT_PER_BYTE, WEIGHT_FLOOR = 4, 10_000

_TAG = "agex-type"


class RefusedValue(pickle.UnpicklingError):
    """The value names something its task's return annotation does not."""


def named_types(annotation: Any) -> list[type]:
    """The classes an annotation names, with those its dataclasses', attrs classes',
    NamedTuples' and TypedDicts' fields name."""
    found: list[type] = []
    _walk(annotation, found, {})
    return found


#: Modules whose classes an annotation may name without admitting them: builtins rebuild
#: from opcodes, and typing's and the abstract collections' are not values.
_NOT_VALUES = ("builtins", "typing", "collections.abc", "abc")


def _walk(annotation: Any, found: list[type], seen: dict[int, Any]) -> None:
    if id(annotation) in seen:
        return
    seen[id(annotation)] = annotation  # kept alive, so that its id is not reused meanwhile
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # the metadata is not a type the value holds
        _walk(annotation.__origin__, found, seen)
        return
    for arg in typing.get_args(annotation):
        _walk(arg, found, seen)
    if origin is not None:
        return  # list[X], X | None, Literal[...]: what it holds was walked above
    if isinstance(annotation, typing.NewType):
        _walk(annotation.__supertype__, found, seen)
        return
    if not isinstance(annotation, type) or annotation.__module__ in _NOT_VALUES:
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
    """The value :func:`dumps` sent, rebuilt with only what ``annotation`` admits; its shape
    is checked first (:func:`check_shape`)."""
    check_shape(data)
    return _Unpickler(io.BytesIO(data), named_types(annotation)).load()


class _Node:
    """What the shape check knows of one object on the stack: how deep it nests, and how
    many objects it holds counting a shared one each time it is used."""

    __slots__ = ("depth", "weight")

    def __init__(self, depth: int = 0, weight: int = 1) -> None:
        self.depth, self.weight = depth, weight

    def holds(self, items: list[_Node]) -> _Node:
        for item in items:
            self.depth = max(self.depth, item.depth + 1)
            self.weight += item.weight
        return self


_MARK = _Node(-1, 0)
#: Opcodes that build a container from the items above the last mark.
_FROM_MARK = {"TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"}
#: Opcodes that add the items above the last mark to the container below it.
_INTO = {"APPENDS", "SETITEMS", "ADDITEMS"}
_FIXED = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_REFUSED = {"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}


def check_shape(data: bytes) -> None:
    """Refuse, without building anything, bytes that would nest deeper than ``MAX_DEPTH``,
    hold far more objects than they have bytes (shared objects used over and over, which
    hashing or printing walks each time), or number a memo slot past those made: each costs
    the loader (or whoever hashes the value) far more than the bytes it came in."""
    limit = WEIGHT_FLOOR + WEIGHT_PER_BYTE * len(data)
    stack: list[_Node] = []
    memo: dict[int, _Node] = {}

    def pop_mark() -> list[_Node]:
        items = []
        while stack and stack[-1] is not _MARK:
            items.append(stack.pop())
        if not stack:
            raise RefusedValue("the value's bytes are malformed (no mark)")
        stack.pop()
        return items

    def top() -> _Node:
        if not stack or stack[-1] is _MARK:
            raise RefusedValue("the value's bytes are malformed (empty stack)")
        return stack[-1]

    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in _REFUSED:
                raise RefusedValue(f"the value's bytes use {name}, which a value never needs")
            if name == "MARK":
                stack.append(_MARK)
            elif name in _FROM_MARK:
                stack.append(_Node().holds(pop_mark()))
            elif name in _INTO:
                items = pop_mark()
                top().holds(items)
            elif name in _FIXED:
                items = [stack.pop() for _ in range(_FIXED[name])]
                stack.append(_Node().holds(items))
            elif name in ("APPEND", "BUILD"):
                item = stack.pop()
                top().holds([item])
            elif name == "SETITEM":
                items = [stack.pop(), stack.pop()]
                top().holds(items)
            elif name in ("REDUCE", "NEWOBJ", "STACK_GLOBAL"):
                items = [stack.pop(), stack.pop()]
                stack.append(_Node().holds(items))
            elif name == "NEWOBJ_EX":
                items = [stack.pop(), stack.pop(), stack.pop()]
                stack.append(_Node().holds(items))
            elif name == "BINPERSID":
                stack.append(_Node().holds([stack.pop()]))
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                index = len(memo) if name == "MEMOIZE" else arg
                if not isinstance(index, int) or index > len(memo):
                    raise RefusedValue(
                        f"the value's bytes number a memo slot ({index}) out of turn"
                    )
                memo[index] = top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                node = memo.get(arg) if isinstance(arg, int) else None
                if node is None:
                    raise RefusedValue("the value's bytes use a memo slot never filled")
                stack.append(node)
            elif name in ("PROTO", "FRAME", "STOP"):
                pass
            else:  # an atom: a number, a string, an empty container, a global, a persid
                stack.append(_Node())
            if stack and stack[-1] is not _MARK:
                node = stack[-1]
                if node.depth > MAX_DEPTH:
                    raise RefusedValue(f"the value nests deeper than {MAX_DEPTH} levels")
                if node.weight > limit:
                    raise RefusedValue(
                        "the value holds far more objects than its bytes (shared objects "
                        "used over and over)"
                    )
    except IndexError:
        raise RefusedValue("the value's bytes are malformed (stack underflow)") from None
    except ValueError as exc:  # pickletools: not a pickle, or cut short
        raise RefusedValue(f"the value's bytes are malformed: {exc}") from None


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
        shown = type(pid).__name__
        if isinstance(pid, tuple) and len(pid) == 3 and all(type(p) is str for p in pid[1:]):
            shown = f"{pid[1][:100]}.{pid[2][:100]}"
        raise RefusedValue(
            f"the value names a class ({shown}) the task's return annotation does not name"
        )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("decimal", "Decimal"):
            return _decimal
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


def _decimal(text: Any) -> decimal.Decimal:
    """A Decimal as its pickle rebuilds it: from its text, of a bounded length."""
    if type(text) is not str or len(text) > DECIMAL_TEXT:
        raise RefusedValue(f"a Decimal is rebuilt from text of at most {DECIMAL_TEXT} characters")
    return decimal.Decimal(text)


__all__ = ["SAFE", "RefusedValue", "check_shape", "dumps", "loads", "named_types"]
