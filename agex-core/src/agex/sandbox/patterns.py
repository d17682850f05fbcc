"""``match`` statements, run through the guards.

CPython matches class patterns in C: ``case C(x=v)`` reads ``subject.x`` natively, past every
attribute check, and a mapping pattern calls the subject's own ``get`` and ``keys``. So agent
``match`` statements are not compiled as such. The rewriter turns each pattern into a *spec*
(a tuple of constants) plus the values it names (classes, dotted constants, mapping keys),
and a chain of ``if`` statements that asks :class:`Matcher` whether the subject matches. The
matcher follows the language reference (PEP 634), and reads every attribute through the same
check as ``obj.attr``.

Spec forms (``slot`` numbers the names a case binds, in a fixed order):

    ("any",)                        the wildcard ``_``
    ("capture", slot, inner)        ``inner as name``, or a bare ``name`` (inner is "any")
    ("value", index)                equal to ``values[index]``
    ("single", constant)            ``None``, ``True``, ``False``: identity
    ("sequence", items, star)       ``[a, *rest, b]``: ``star`` is the position of the
                                    starred item or -1; a starred item is ("star", slot|-1)
    ("mapping", keys, items, rest)  ``{k: p, **rest}``: ``keys`` index ``values``; rest a slot
                                    or -1
    ("class", index, positional, names, keywords)
    ("or", alternatives)
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from agex.errors import AccessDenied

Spec = tuple[Any, ...]

_SEQUENCE = 1 << 5  # Py_TPFLAGS_SEQUENCE: what a sequence pattern accepts
_MAPPING = 1 << 6  # Py_TPFLAGS_MAPPING
_MATCH_SELF = 1 << 22  # int(x), str(x), ...: one positional sub-pattern matches the subject
_NOT_SEQUENCES = (str, bytes, bytearray)
_MISSING = object()


class Compiled:
    """One case's pattern: its spec, the expressions it names, and the names it binds."""

    def __init__(self) -> None:
        self.values: list[ast.expr] = []
        self.names: list[str] = []

    def slot(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)

    def value(self, expr: ast.expr) -> int:
        self.values.append(expr)
        return len(self.values) - 1

    def spec(self, pattern: ast.pattern) -> Spec:
        if isinstance(pattern, ast.MatchAs):
            inner = ("any",) if pattern.pattern is None else self.spec(pattern.pattern)
            return inner if pattern.name is None else ("capture", self.slot(pattern.name), inner)
        if isinstance(pattern, ast.MatchValue):
            return ("value", self.value(pattern.value))
        if isinstance(pattern, ast.MatchSingleton):
            return ("single", pattern.value)
        if isinstance(pattern, ast.MatchSequence):
            elements: list[Spec] = []
            star = -1
            for position, item in enumerate(pattern.patterns):
                if isinstance(item, ast.MatchStar):
                    star = position
                    elements.append(("star", -1 if item.name is None else self.slot(item.name)))
                else:
                    elements.append(self.spec(item))
            return ("sequence", tuple(elements), star)
        if isinstance(pattern, ast.MatchMapping):
            keys = tuple(self.value(key) for key in pattern.keys)
            items = tuple(self.spec(p) for p in pattern.patterns)
            rest = -1 if pattern.rest is None else self.slot(pattern.rest)
            return ("mapping", keys, items, rest)
        if isinstance(pattern, ast.MatchClass):
            return (
                "class",
                self.value(pattern.cls),
                tuple(self.spec(p) for p in pattern.patterns),
                tuple(pattern.kwd_attrs),
                tuple(self.spec(p) for p in pattern.kwd_patterns),
            )
        if isinstance(pattern, ast.MatchOr):
            return ("or", tuple(self.spec(p) for p in pattern.patterns))
        raise TypeError(f"unknown pattern {type(pattern).__name__}")  # pragma: no cover


class Matcher:
    """Decides whether a subject matches a spec; attribute reads go through ``get``."""

    def __init__(self, get: Callable[[Any, str], Any]) -> None:
        self._get = get

    def __call__(
        self, subject: Any, spec: Spec, values: tuple[Any, ...], slots: int
    ) -> tuple[Any, ...] | None:
        """The values bound to the case's names, in slot order, or None: no match."""
        bound: list[Any] = [None] * slots
        return tuple(bound) if self._match(subject, spec, values, bound) else None

    def _match(self, subject: Any, spec: Spec, values: tuple[Any, ...], bound: list[Any]) -> bool:
        kind = spec[0]
        if kind == "any":
            return True
        if kind == "capture":
            if not self._match(subject, spec[2], values, bound):
                return False
            bound[spec[1]] = subject
            return True
        if kind == "value":
            return bool(subject == values[spec[1]])
        if kind == "single":
            return subject is spec[1]
        if kind == "or":
            return any(self._match(subject, alt, values, bound) for alt in spec[1])
        if kind == "sequence":
            return self._sequence(subject, spec, values, bound)
        if kind == "mapping":
            return self._mapping(subject, spec, values, bound)
        return self._class(subject, spec, values, bound)

    def _sequence(
        self, subject: Any, spec: Spec, values: tuple[Any, ...], bound: list[Any]
    ) -> bool:
        _, items, star = spec
        if not type(subject).__flags__ & _SEQUENCE or isinstance(subject, _NOT_SEQUENCES):
            return False
        size = len(subject)
        if (size != len(items)) if star < 0 else (size < len(items) - 1):
            return False
        elements = list(subject)
        if len(elements) != size:
            return False  # changed size while being read
        if star < 0:
            pairs = list(zip(items, elements, strict=True))
        else:
            after = len(items) - star - 1
            tail = elements[size - after :] if after else []
            pairs = [
                *zip(items[:star], elements[:star], strict=True),
                *zip(items[star + 1 :], tail, strict=True),
            ]
            slot = items[star][1]
            if slot >= 0:
                bound[slot] = elements[star : size - after]
        return all(self._match(element, item, values, bound) for item, element in pairs)

    def _mapping(self, subject: Any, spec: Spec, values: tuple[Any, ...], bound: list[Any]) -> bool:
        _, keys, items, rest = spec
        if not type(subject).__flags__ & _MAPPING:
            return False
        if len(subject) < len(keys):
            return False
        wanted = [values[k] for k in keys]
        seen: list[Any] = []
        for key in wanted:
            if key in seen:
                raise ValueError(f"mapping pattern checks duplicate key ({key!r})")
            seen.append(key)
        lookup = subject.get if type(subject) is dict else self._get(subject, "get")
        for key, item in zip(wanted, items, strict=True):
            found = lookup(key, _MISSING)
            if found is _MISSING or not self._match(found, item, values, bound):
                return False
        if rest >= 0:
            names = subject.keys() if type(subject) is dict else self._get(subject, "keys")()
            remaining = {k: subject[k] for k in names}
            for key in wanted:
                remaining.pop(key, None)
            bound[rest] = remaining
        return True

    def _class(self, subject: Any, spec: Spec, values: tuple[Any, ...], bound: list[Any]) -> bool:
        _, index, positional, names, keywords = spec
        cls = values[index]
        if not isinstance(cls, type):
            raise TypeError("called match pattern must be a class")
        if not isinstance(subject, cls):
            return False
        attributes: list[str] = []
        match_self = False
        if positional:
            match_args: Any = getattr(cls, "__match_args__", _MISSING)
            if match_args is _MISSING:
                match_self = bool(cls.__flags__ & _MATCH_SELF)
                allowed = 1 if match_self else 0
            elif type(match_args) is tuple:
                allowed = len(match_args)
            else:
                raise TypeError(
                    f"{cls.__name__}.__match_args__ must be a tuple (got "
                    f"{type(match_args).__name__})"
                )
            if len(positional) > allowed:
                plural = "" if allowed == 1 else "s"
                raise TypeError(
                    f"{cls.__name__}() accepts {allowed} positional sub-pattern{plural} "
                    f"({len(positional)} given)"
                )
            if not match_self:
                for name in match_args[: len(positional)]:
                    if type(name) is not str:
                        raise TypeError(
                            f"__match_args__ elements must be strings (got {type(name).__name__})"
                        )
                    attributes.append(name)
        attributes += names
        if len(set(attributes)) != len(attributes):
            duplicate = next(a for a in attributes if attributes.count(a) > 1)
            raise TypeError(
                f"{cls.__name__}() got multiple sub-patterns for attribute {duplicate!r}"
            )
        found = [subject] if match_self else []
        for name in attributes:
            try:
                found.append(self._get(subject, name))
            except AccessDenied:
                raise
            except AttributeError:
                return False
        patterns = (*positional, *keywords)
        return all(
            self._match(value, pattern, values, bound)
            for value, pattern in zip(found, patterns, strict=True)
        )
