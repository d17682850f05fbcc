"""Serializing the agent's variables so its own functions come back to life in a sandbox.

A function the agent defined refers to its namespace as its globals. Pickled as usual, it
would come back with a fresh globals dict and the interpreter's real builtins, and the
sandbox's tripwire would stop it. This pickler leaves those globals out, and loading binds
each agent function (methods of agent classes included) to the namespace it is loaded into.
"""

from __future__ import annotations

import contextvars
import io
import marshal
import pickle
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from agex.sandbox.ownership import agent_function

_into: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "agex_loading_into", default=None
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
    closure = None if cells is None else tuple(types.CellType(v) for v in cells)
    func = types.FunctionType(code, namespace, name, defaults, closure)
    func.__qualname__ = qualname
    func.__kwdefaults__ = kwdefaults
    func.__dict__.update(attributes)
    return func


class _AgentPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and agent_function(obj):
            cells = (
                None if obj.__closure__ is None else tuple(c.cell_contents for c in obj.__closure__)
            )
            # marshal keeps the code exactly, its file name included: that name is what
            # marks the function as the agent's (cloudpickle may rename it).
            return _rebuild, (
                marshal.dumps(obj.__code__),
                obj.__name__,
                obj.__qualname__,
                obj.__defaults__,
                obj.__kwdefaults__,
                cells,
                dict(obj.__dict__),
            )
        return super().reducer_override(obj)


class AgentStateSerializer:
    """cloudpickle, with the agent's functions bound to the namespace they load into."""

    def dumps(self, value: Any) -> bytes:
        buffer = io.BytesIO()
        _AgentPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return buffer.getvalue()

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


@contextmanager
def loading_into(namespace: dict[str, Any]) -> Iterator[None]:
    """Agent functions loaded inside this block get ``namespace`` as their globals."""
    token = _into.set(namespace)
    try:
        yield
    finally:
        _into.reset(token)
