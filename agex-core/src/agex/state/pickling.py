"""Serializing the agent's variables so its own functions come back to life in a sandbox.

A function the agent defined refers to its namespace as its globals. Pickled as usual, it
would come back with a fresh globals dict and the interpreter's real builtins, and the
sandbox's tripwire would stop it. This pickler leaves those globals out, and loading binds
each agent function (methods of agent classes included) to the namespace it is loaded into.

What the sandbox handed to agent code is stored by what it stands for and handed out again
by the sandbox it loads into: a module view by the module's name (cloudpickle would store
the real module), the sandbox's ``getattr`` and ``type`` by name (a pickled guard would
carry its policy along), a class agent code may not construct by that class. Other pieces of
the sandbox, and real modules, are not stored at all.
"""

from __future__ import annotations

import contextvars
import functools
import io
import marshal
import pickle
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from agex.sandbox.guards import Guards, is_sandbox_type
from agex.sandbox.ownership import Marker, agent_function
from agex.sandbox.policy import ModuleView

_into: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "agex_loading_into", default=None
)
#: The code of every agent function loaded, in the order loaded (see ``loading_into``).
_loaded: contextvars.ContextVar[list[types.CodeType] | None] = contextvars.ContextVar(
    "agex_loaded_code", default=None
)
#: The classes whose stored state the run loading applied (see ``loading_into``).
_built: contextvars.ContextVar[set[type] | None] = contextvars.ContextVar(
    "agex_built_classes", default=None
)


def _rebuild(
    compiled: bytes,
    name: str,
    qualname: str,
    defaults: Any,
    kwdefaults: Any,
    cells: tuple[Any, ...] | None,
    attributes: dict[str, Any],
) -> types.FunctionType:
    namespace = _into.get()
    if namespace is None:
        raise pickle.UnpicklingError(
            "an agent function can only be loaded into a sandbox namespace (state.loading_into)"
        )
    code = marshal.loads(compiled)
    loaded = _loaded.get()
    if loaded is not None:
        loaded.append(code)
    closure = None if cells is None else tuple(types.CellType(v) for v in cells)
    func = types.FunctionType(code, namespace, name, defaults, closure)
    func.__qualname__ = qualname
    func.__kwdefaults__ = kwdefaults
    func.__dict__.update(attributes)
    return func


def _builtins() -> dict[str, Any]:
    """The builtins of the sandbox namespace being loaded into."""
    namespace = _into.get()
    if namespace is None:
        raise pickle.UnpicklingError(
            "what the sandbox handed to agent code can only be loaded into a sandbox namespace"
        )
    table: dict[str, Any] = namespace["__builtins__"]
    return table


def _guards() -> Guards:
    guards: Guards = _builtins()["_agex_getattr"].__self__
    return guards


def _view(name: str) -> types.ModuleType:
    policy = _guards().policy
    if not policy.importable(name):
        raise pickle.UnpicklingError(f"module {name!r} is no longer available to agent code")
    return policy.view(name)


def _builtin(name: str) -> Any:
    return _builtins()[name]


def _guard_method(func: Any) -> Any:
    for value in _builtins().values():
        if isinstance(value, types.MethodType) and value.__func__ is func:
            return value
    raise pickle.UnpicklingError(f"the sandbox has no {func.__qualname__} to load")


def _stand_in(cls: type) -> type:
    return _guards().policy.exposed_class(cls)


def _sandbox_piece(obj: Any) -> str | None:
    """What ``obj`` is, if it is part of the sandbox that must not be stored as it is."""
    if isinstance(obj, types.MethodType):
        owner = obj.__self__
        if isinstance(owner, type):
            return None
        return _sandbox_piece(owner) and f"method {obj.__func__.__qualname__}"
    if isinstance(obj, types.FunctionType):
        module = obj.__module__ or ""
        local = "<locals>" in obj.__qualname__ or "<lambda>" in obj.__qualname__
        if module.startswith("agex.sandbox") and local:
            return f"function {obj.__qualname__}"
        return None
    module = getattr(type(obj), "__module__", "") or ""
    if module.startswith("agex.sandbox") and not isinstance(obj, BaseException | type | Marker):
        return f"{type(obj).__name__} object"
    return None


class _AgentPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def __init__(self, file: Any, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        #: The code of every agent function stored, methods of agent classes included.
        self.codes: list[types.CodeType] = []
        #: The classes stored by value with their state (by cloudpickle's id for each).
        self.classes: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            if isinstance(obj, ModuleView):
                return _view, (obj.__name__,)
            raise pickle.PicklingError(
                f"module {obj.__name__!r} is not agent code's to store; import it again"
            )
        if isinstance(obj, type):
            real = obj.__dict__.get("__agex_sealed__")
            if isinstance(real, type):
                return _stand_in, (real,)
            if is_sandbox_type(obj):
                return _builtin, ("type",)
        elif isinstance(obj, types.MethodType) and isinstance(obj.__self__, Guards):
            return _guard_method, (obj.__func__,)
        else:
            piece = _sandbox_piece(obj)
            if piece is not None:
                raise pickle.PicklingError(
                    f"{piece} belongs to the sandbox and cannot be stored; store plain values"
                )
        if isinstance(obj, types.FunctionType) and agent_function(obj):
            self.codes.append(obj.__code__)
            cells = (
                None if obj.__closure__ is None else tuple(c.cell_contents for c in obj.__closure__)
            )
            # marshal keeps the code exactly, its file name included: that name is what
            # marks the function as the agent's (cloudpickle may rename it).
            return _rebuild, (
                _marshalled(obj.__code__),
                obj.__name__,
                obj.__qualname__,
                obj.__defaults__,
                obj.__kwdefaults__,
                cells,
                dict(obj.__dict__),
            )
        reduced = super().reducer_override(obj)
        if (
            isinstance(reduced, tuple)
            and len(reduced) == 6
            and reduced[5] is cloudpickle.cloudpickle._class_setstate
        ):
            self.classes.add(cloudpickle.cloudpickle._get_or_create_tracker_id(obj))
            reduced = (*reduced[:5], _class_setstate)
        return reduced


@functools.lru_cache(maxsize=1024)
def _marshalled(code: types.CodeType) -> bytes:
    """``code`` as marshal writes it once it has been through marshal: the same bytes
    for the code of a function the agent just defined and of one loaded again (so a value
    only read is not stored again)."""
    return marshal.dumps(marshal.loads(marshal.dumps(code)))


def _class_setstate(cls: type, state: Any) -> type:
    """A class's stored state, applied the first time the run loading meets the class: a
    class the run already has (loaded before, and maybe changed since by its code) keeps
    what it has. Every stored value holds its own copy of its class's state, as it was when
    that value was stored. (Values name this in place of cloudpickle's own, see
    ``_AgentPickler``.)"""
    built = _built.get()
    if built is not None:
        if cls in built:
            return cls
        built.add(cls)
    applied: type = cloudpickle.cloudpickle._class_setstate(cls, state)
    return applied


class AgentStateSerializer:
    """cloudpickle, with the agent's functions bound to the namespace they load into."""

    def dumps(self, value: Any) -> bytes:
        return self.traced(value)[0]

    def traced(self, value: Any) -> tuple[bytes, list[types.CodeType], set[str]]:
        """``value`` serialized, the code of the agent functions stored with it, and the
        ids of the classes stored with it by value."""
        buffer = io.BytesIO()
        pickler = _AgentPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dump(value)
        return buffer.getvalue(), pickler.codes, pickler.classes

    def loads(self, data: bytes | memoryview) -> Any:
        return pickle.loads(data)


@contextmanager
def loading_into(
    namespace: dict[str, Any],
    codes: list[types.CodeType] | None = None,
    classes: set[type] | None = None,
) -> Iterator[None]:
    """Agent functions loaded inside this block get ``namespace`` as their globals, and
    their code is added to ``codes``. A class already in ``classes`` keeps its state; one
    that is not gets the state stored with the value, and is added (a run passes the same
    set to each load: loading one more variable never undoes what its code did to a class;
    loaded newest first, each class gets its newest stored state)."""
    token, counted, built = _into.set(namespace), _loaded.set(codes), _built.set(classes)
    try:
        yield
    finally:
        _built.reset(built)
        _loaded.reset(counted)
        _into.reset(token)
