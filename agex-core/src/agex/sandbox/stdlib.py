"""The part of the standard library agent code may import without registration.

Some members are left out: they evaluate strings as code, read or write attributes by a name
the caller chooses (which would step around the attribute checks), hand out the real
``type``, or change state the whole process shares. A few useful ones are replaced by
versions that only act on the agent's own classes and functions.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from agex.errors import AccessDenied
from agex.sandbox import nesting
from agex.sandbox.annotations import checked_annotation
from agex.sandbox.live import LiveObject
from agex.sandbox.ownership import agent_owned

#: module -> members left out.
SAFE_MODULES: dict[str, frozenset[str]] = {
    name: frozenset(left_out)
    for name, left_out in {
        "math": (),
        "cmath": (),
        "json": (),
        "re": (),
        "datetime": (),
        "collections": ("UserString",),  # its format() is str.format without the checks
        "collections.abc": (),
        "itertools": (),
        "functools": ("singledispatch", "singledispatchmethod"),  # evaluate annotations
        "statistics": (),
        "random": (),
        "string": ("Formatter",),  # attribute traversal in format fields
        "dataclasses": ("make_dataclass",),
        "typing": (
            "get_type_hints",  # evaluates string annotations
            "ForwardRef",  # compiles a string that hint resolution later evaluates
            "get_origin",  # get_origin(typing.Type) is the real type
            "Type",
            "final",  # these set attributes on whatever they are given
            "no_type_check",
            "no_type_check_decorator",
            "runtime_checkable",
            "abstractmethod",
            "dataclass_transform",
            "overload",  # a registry the whole process shares
            "get_overloads",
            "clear_overloads",
        ),
        "decimal": (
            "setcontext",
            "getcontext",
            "localcontext",
            "DefaultContext",
            "BasicContext",
            "ExtendedContext",
        ),  # process-wide contexts
        "fractions": (),
        "operator": ("attrgetter", "methodcaller"),  # attribute names chosen by the caller
        "textwrap": ("TextWrapper",),  # its class-level tables are the process's
        "heapq": (),
        "bisect": (),
    }.items()
}


def _require_agent(what: str, obj: Any) -> None:
    if not agent_owned(obj):
        raise AccessDenied(f"{what} only works on classes and objects defined in agent code")


def _on_agent_objects(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func(obj, ...)`` for objects the agent defined only."""

    @functools.wraps(func)
    def checked(obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _require_agent(func.__name__, obj)
        return func(obj, *args, **kwargs)

    return checked


def _dataclass(cls: Any = None, /, **options: Any) -> Any:
    """``dataclasses.dataclass``, for the agent's own classes. It writes source code from
    each field's name, type and default: its fields must be the standard library's own
    ``Field`` objects, whose names come from the class body's annotations (agent code cannot
    derive from ``Field``, see :data:`SEALED`, and this checks every field the decorator
    will read, inherited ones included)."""

    def wrap(target: Any) -> Any:
        _require_agent("dataclass", target)
        names = {n for k in target.__mro__ for n in vars(k).get("__annotations__", {})}
        for name in sorted(names | set(vars(target))):
            value = inspect.getattr_static(target, name, None)
            if isinstance(value, dataclasses.Field) and type(value) is not dataclasses.Field:
                raise AccessDenied(
                    f"dataclass field {name!r} must be made with dataclasses.field(), not "
                    f"{type(value).__name__}"
                )
        made = dataclasses.dataclass(**options)(target)
        if made is not target:  # slots=True makes a new class from the agent's
            _require_agent("dataclass", made)
        return made

    return wrap if cls is None else wrap(cls)


def _opened(obj: Any, pack: Callable[[Any, list[tuple[str, Any]]], Any]) -> Any:
    """``obj`` with the agent's dataclasses inside it opened by ``pack``, recursively as
    ``dataclasses.asdict`` does, but only the agent's own: a host dataclass nested in one
    is the host's, with fields its registration may hide."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _require_agent("opening a nested dataclass", obj)
        fields = [(f.name, _opened(getattr(obj, f.name), pack)) for f in dataclasses.fields(obj)]
        return pack(obj, fields)
    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
        return type(obj)(*[_opened(v, pack) for v in obj])
    if isinstance(obj, list | tuple):
        return type(obj)(_opened(v, pack) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_opened(k, pack), _opened(v, pack)) for k, v in obj.items())
    return obj


def _asdict(obj: Any, /, *, dict_factory: Callable[[Any], Any] = dict) -> Any:
    """``dataclasses.asdict`` for the agent's own dataclasses (values are not deep-copied)."""
    _require_agent("asdict", obj)
    return _opened(obj, lambda _, fields: dict_factory(fields))


def _astuple(obj: Any, /, *, tuple_factory: Callable[[Any], Any] = tuple) -> Any:
    """``dataclasses.astuple`` for the agent's own dataclasses (values are not deep-copied)."""
    _require_agent("astuple", obj)
    return _opened(obj, lambda _, fields: tuple_factory(v for _, v in fields))


def _update_wrapper(wrapper: Any, wrapped: Any, /) -> Any:
    """``functools.update_wrapper`` that copies the wrapped object's name, qualified name,
    module and docstring (plain strings), and its ``__dict__`` only when it is the agent's
    own: a host object's would bring members its registration hides."""
    _require_agent("update_wrapper", wrapper)
    if agent_owned(wrapped):
        return functools.update_wrapper(wrapper, wrapped)
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        value = getattr(wrapped, name, None)
        if type(value) is str:
            setattr(wrapper, name, value)
    return wrapper


def _wraps(wrapped: Any, /) -> Callable[[Any], Any]:
    return lambda wrapper: _update_wrapper(wrapper, wrapped)


def _field_types(function: Callable[..., Any], keywords: tuple[str, ...]) -> Callable[..., Any]:
    """``typing.NamedTuple`` or ``TypedDict``, whose functional form checks its field types
    as annotations (it stores them as ``__annotations__``, strings as ``ForwardRef``). The
    fields are copied once into plain lists, dicts and tuples, checked, and that copy is what
    the class is made from; ``keywords`` are the function's own options, not fields. The
    class form still works, its body's annotations checked as any."""

    @functools.wraps(function)
    def checked(typename: str, fields: Any = None, /, **kwargs: Any) -> Any:
        if isinstance(fields, dict):
            fields = dict(fields)
            pairs = list(dict.items(fields))
        elif fields is not None:
            fields = [tuple(pair) for pair in list(fields)]
            pairs = [(name, kind) for name, kind in fields]
        else:
            pairs = []
        pairs += [(k, v) for k, v in kwargs.items() if k not in keywords]
        for _, kind in pairs:
            checked_annotation(kind)
        made = (
            function(typename, fields, **kwargs)
            if fields is not None
            else function(typename, **kwargs)
        )
        type.__setattr__(made, "__module__", "__agent__")  # the caller's, as typing would
        return made

    entries = function.__mro_entries__  # type: ignore[attr-defined]
    checked.__mro_entries__ = lambda bases: entries((function,))  # type: ignore[attr-defined]
    del checked.__wrapped__
    return checked


class PerPolicy:
    """A replacement that needs the policy it is handed out under."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make = make


def _get_args(policy: Any) -> Callable[[Any], tuple[Any, ...]]:
    def get_args(alias: Any, /) -> tuple[Any, ...]:
        """``typing.get_args``, each argument as agent code may see it (a class it may not
        construct as its stand-in)."""

        def exposed(arg: Any) -> Any:
            if isinstance(arg, list):
                return [exposed(a) for a in arg]
            return policy.exposed(arg, "an argument of the alias")

        return tuple(exposed(arg) for arg in typing.get_args(alias))

    return get_args


#: (module, member) -> what agent code gets instead.
REPLACED: dict[tuple[str, str], Any] = {
    ("dataclasses", "dataclass"): _dataclass,
    ("dataclasses", "asdict"): _asdict,
    ("dataclasses", "astuple"): _astuple,
    ("dataclasses", "fields"): _on_agent_objects(dataclasses.fields),
    ("dataclasses", "replace"): _on_agent_objects(dataclasses.replace),
    ("functools", "total_ordering"): _on_agent_objects(functools.total_ordering),
    ("functools", "update_wrapper"): _update_wrapper,
    ("functools", "wraps"): _wraps,
    ("typing", "NamedTuple"): _field_types(typing.NamedTuple, ()),
    ("typing", "TypedDict"): _field_types(typing.TypedDict, ("total",)),  # type: ignore[arg-type]
    ("typing", "get_args"): PerPolicy(_get_args),
    **{("itertools", name): value for name, value in nesting.ITERTOOLS.items()},
}

#: Classes agent code may not derive from: the standard library trusts what their instances
#: say (a dataclass ``Field``'s name becomes source code).
SEALED = frozenset({dataclasses.Field})

#: Classes agent code may not call itself: an alias made by calling ``types.GenericAlias``
#: or typing's alias classes with any callable as its origin sets ``__orig_class__`` on what
#: that callable returns (a host object, say). ``list[int]`` and ``typing.List[int]`` work.
#: A live object's holder is made by its registration only.
UNCONSTRUCTABLE = frozenset({types.GenericAlias, typing._BaseGenericAlias, LiveObject})  # type: ignore[attr-defined]

#: Module-level values of these types are shared with the whole process; agent code gets
#: none of them from the standard library.
MUTABLE = (list, dict, set, bytearray)
