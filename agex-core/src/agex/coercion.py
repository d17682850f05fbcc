"""Values made to fit a type annotation: task arguments are checked against the task's
hints, and what the agent passes to ``task_success`` is checked and converted to the return
annotation. A value that does not fit raises ``TypeError`` saying where and why.

Supported: ``Any``, None, the builtin scalars, ``list``/``tuple``/``set``/``frozenset``/
``dict`` and their abstract forms, ``Optional`` and unions, ``Literal``, dataclasses, attrs
classes, pydantic models (when pydantic is installed), and any other class by isinstance.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import types
import typing
from typing import Any

from agex.sandbox.ownership import agent_class

_SCALARS = (bool, int, float, complex, str, bytes)


def conform(value: Any, annotation: Any, where: str = "value") -> Any:
    """``value`` as ``annotation`` asks, or TypeError naming ``where`` and the mismatch."""
    if annotation is typing.Any or annotation is object:
        return value
    if annotation is None or annotation is type(None):
        if value is None:
            return None
        raise TypeError(f"{where} should be None, got {_describe(value)}")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union(value, args, where)
    if origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise TypeError(f"{where} should be one of {list(args)!r}, got {value!r}")
    if origin is not None:
        return _generic(value, origin, args, where)
    if isinstance(annotation, typing.NewType):
        return conform(value, annotation.__supertype__, where)
    if typing.is_typeddict(annotation):
        return _typed_dict(value, annotation, where)
    if isinstance(annotation, type):
        return _class(value, annotation, where)
    return value  # a forward reference or special form we do not check


def _typed_dict(value: Any, cls: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, abc.Mapping):
        raise TypeError(f"{where} should be a dict, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    missing = sorted(cls.__required_keys__ - set(value))
    if missing:
        raise TypeError(f"{where} is missing key(s) {missing}")
    unknown = sorted(set(value) - set(hints), key=repr)
    if unknown:
        raise TypeError(f"{where}: {cls.__name__} has no key(s) {unknown}")
    return {k: conform(v, hints[k], f"{where}[{k!r}]") for k, v in value.items()}


def _union(value: Any, options: tuple[Any, ...], where: str) -> Any:
    for option in options:  # an exact type match first, so 1 stays an int in int | float
        if isinstance(option, type) and type(value) is option:
            return value
    problems = []
    for option in options:
        try:
            return conform(value, option, where)
        except TypeError as exc:
            problems.append(str(exc))
    raise TypeError(f"{where} fits none of {_name(options)}: " + "; ".join(problems))


def _generic(value: Any, origin: Any, args: tuple[Any, ...], where: str) -> Any:
    if origin in (list, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection):
        if isinstance(value, str | bytes | abc.Mapping) or not isinstance(value, abc.Collection):
            raise TypeError(f"{where} should be a list, got {_describe(value)}")
        item = args[0] if args else typing.Any
        return [conform(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where} should be a tuple, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(conform(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise TypeError(f"{where} should have {len(args)} items, got {len(value)}")
        kinds = args or (typing.Any,) * len(value)
        pairs = enumerate(zip(value, kinds, strict=True))
        return tuple(conform(v, t, f"{where}[{i}]") for i, (v, t) in pairs)
    if origin in (set, frozenset, abc.Set, abc.MutableSet):
        if isinstance(value, str | bytes | abc.Mapping) or not isinstance(value, abc.Collection):
            raise TypeError(f"{where} should be a set, got {_describe(value)}")
        item = args[0] if args else typing.Any
        items = [conform(v, item, f"{where} item") for v in value]
        return frozenset(items) if origin is frozenset else set(items)
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        if not isinstance(value, abc.Mapping):
            raise TypeError(f"{where} should be a dict, got {_describe(value)}")
        key, item = args if len(args) == 2 else (typing.Any, typing.Any)
        return {
            conform(k, key, f"{where} key {k!r}"): conform(v, item, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if isinstance(origin, type):
        return _class(value, origin, where)
    return value


#: How to get the exact builtin value out of an instance of a subclass, without running any
#: of the subclass's own methods.
_EXACT: dict[type, Any] = {
    int: int.__index__,
    float: float.__float__,
    complex: complex.__complex__,
    str: str.__str__,
    bytes: bytes.__bytes__,
    # A subclass from the standard library may hold agent code that the caller's later use
    # would run, with no time limit: a defaultdict's factory, say.
    dict: dict,
    list: list,
    tuple: tuple,
    set: set,
    frozenset: frozenset,
}


def _class(value: Any, cls: type, where: str) -> Any:
    if cls is float and type(value) is int:
        return float(value)
    if cls is complex and type(value) in (int, float):
        return complex(value)
    if isinstance(value, cls):
        if cls is int and type(value) is bool:
            raise TypeError(f"{where} should be an int, got a bool")
        if type(value) is not cls and cls in _EXACT:
            return _EXACT[cls](value)
        if agent_class(type(value)) and not agent_class(cls):
            raise TypeError(
                f"{where} should be a {cls.__name__}, not {type(value).__name__}, a subclass "
                "defined in agent code"
            )
        return value
    if cls in _SCALARS:
        raise TypeError(f"{where} should be {cls.__name__}, got {_describe(value)}")
    if dataclasses.is_dataclass(cls) and isinstance(value, abc.Mapping):
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        return _build(cls, value, fields, hints, where)
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None and isinstance(value, abc.Mapping):
        hints = typing.get_type_hints(cls)
        fields = {a.name for a in attrs_fields if a.init}
        return _build(cls, value, fields, hints, where)
    validate = getattr(cls, "model_validate", None)  # pydantic v2
    if validate is not None and callable(validate):
        try:
            return validate(value)
        except Exception as exc:
            raise TypeError(f"{where} is not a valid {cls.__name__}: {exc}") from None
    raise TypeError(f"{where} should be {cls.__name__}, got {_describe(value)}")


def _build(
    cls: type, data: abc.Mapping[str, Any], fields: set[str], hints: dict[str, Any], where: str
) -> Any:
    unknown = set(data) - fields
    if unknown:
        raise TypeError(f"{where}: {cls.__name__} has no field(s) {sorted(unknown)}")
    values = {k: conform(v, hints.get(k, typing.Any), f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise TypeError(f"{where} cannot make a {cls.__name__}: {exc}") from None


def _describe(value: Any) -> str:
    try:
        text = str.__str__(repr(value))
    except Exception:
        text = "(unprintable)"
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _name(options: tuple[Any, ...]) -> str:
    return " | ".join(getattr(o, "__name__", repr(o)) for o in options)
