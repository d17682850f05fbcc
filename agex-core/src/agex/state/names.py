"""Which global names agent code reads, uses and rebinds, read off its bytecode: what a
step may need loaded, and what a stored value's functions and classes may reach."""

from __future__ import annotations

import dis
import functools
from collections.abc import Iterable
from types import CodeType

#: Instructions that read a name from the namespace (or need it there, to delete it) ...
_READS = frozenset(
    {"LOAD_NAME", "LOAD_GLOBAL", "DELETE_NAME", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"}
)
#: ... and those that use it at all (not an attribute's name, nor a module's).
_USES = _READS | {"STORE_NAME", "STORE_GLOBAL"}
_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})


def rebinds(codes: Iterable[CodeType]) -> frozenset[str]:
    """The global names the agent code ``codes`` rebinds."""
    return frozenset().union(*map(stored, codes))


def reach(codes: Iterable[CodeType]) -> frozenset[str]:
    """The global names the agent code ``codes`` uses."""
    return frozenset().union(*map(uses, codes))


@functools.lru_cache(maxsize=1024)
def reads(code: CodeType) -> frozenset[str]:
    """The names a step's code reads (one it only binds need not be loaded first), and
    every global name its functions and classes use."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _READS}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= uses(const)
    return frozenset(names)


def uses(code: CodeType) -> frozenset[str]:
    """The global names ``code`` and the code inside it use."""
    return _collected(code, _USES)


def stored(code: CodeType) -> frozenset[str]:
    """The global names ``code`` and the code inside it rebind or delete."""
    return _collected(code, _STORES)


def mentioned(code: CodeType) -> frozenset[str]:
    """Every name ``code`` and the code inside it name: globals, attributes, modules."""
    return _collected(code, None)


@functools.lru_cache(maxsize=4096)
def _collected(code: CodeType, ops: frozenset[str] | None) -> frozenset[str]:
    if ops is None:
        names = set(code.co_names)
    else:
        names = {i.argval for i in dis.get_instructions(code) if i.opname in ops}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _collected(const, ops)
    return frozenset(names)
