"""Annotations agent code writes, checked when they are evaluated.

Host code may resolve the agent's type hints long after the run (pydantic, a schema
builder, ``typing.get_type_hints``), and resolving evaluates any string in them as code:
unrewritten, and for a class with the real builtins. So an annotation may not be or hold a
string or a ``ForwardRef`` where resolving would evaluate it.
"""

from __future__ import annotations

import typing
from typing import Any

from agex.errors import CallDenied

#: Plain values, which ``Literal[...]`` may hold: resolving leaves them as they are.
_VALUES = frozenset({str, bytes, int, float, complex, bool, type(None)})


def checked_annotation(value: Any) -> Any:
    """An annotation agent code wrote, once it holds nothing that resolving type hints
    would evaluate: ``typing.get_type_hints`` runs a string annotation, or one inside
    ``list[...]`` or ``typing.List[...]`` (a ``ForwardRef``), as code, with no rewriting and,
    for a class, the real builtins. Plain values in ``Literal[...]`` and ``Annotated``
    metadata are not resolved, so they may be strings."""
    _check_annotation(value, 0)
    return value


def _check_annotation(value: Any, depth: int) -> None:
    if isinstance(value, str | typing.ForwardRef):
        shown = str.__str__(str(value))[:80]
        raise CallDenied(
            f"annotations in agent code must be types, not strings ({shown!r}): write the "
            "type itself"
        )
    if depth > 20:
        raise CallDenied("this annotation is nested too deeply to check")
    origin = typing.get_origin(value)
    args = typing.get_args(value)
    if origin is typing.Annotated:
        args = args[:1]
    for arg in args:
        for item in arg if isinstance(arg, list | tuple) else (arg,):
            if origin is typing.Literal and type(item) in _VALUES:
                continue  # Literal["a"] is a value; an alias inside one is resolved
            _check_annotation(item, depth + 1)
