"""Lazy iterators that know how deeply they are nested, for agent code.

A ``map`` of a ``map`` of a ``map``... asks the one below it for each item in C, with no
recursion check, so a chain some ten thousand deep overflows the C stack and the process
dies (``x = map(abs, x)`` in a loop, then ``next(x)``). The same holds for ``filter``,
``zip``, ``enumerate`` and every itertools iterator that wraps another; several of them also
recurse when a deep chain is freed. Agent code gets subclasses of the real types that
record their depth, one more than the deepest iterator they hold, and refuse to be built
deeper than :data:`MAX_NESTING`. Only construction runs Python code: iterating is the real
type's C code, at its speed.

Three other ways lead from one iterator's ``__next__`` into another's without passing a
depth along. Each is sent through a call the interpreter counts toward the recursion limit
(that check is what makes a Python function or a generator in such a chain safe):

* a callback that iterates its argument: ``map(list, [x])``. Builtin functions and methods
  are counted calls, but classes with a fast call path (``list``, ``tuple``, ``set``,
  ``frozenset``, ``dict``) and ``functools.partial`` objects are not; such a callback is
  wrapped in ``staticmethod``, whose call is counted;
* an item the iterator iterates itself: ``chain.from_iterable([x])`` iterates each item,
  ``starmap`` turns each item into a tuple, ``chain(obj)`` iterates whatever
  ``obj.__iter__`` returns when it gets there. Such items are iterated through a generator
  unless they are plain containers, and starmap's tuples are made by a counted call;
* the callable of ``iter(callable, sentinel)``, wrapped as a callback is.

A stretch of C stack without a counted call is then at most ``MAX_NESTING`` tracked
iterators deep, and there are at most ``sys.getrecursionlimit()`` counted calls.

The limit, measured on CPython 3.11 (x86-64 Linux, 8 MiB stacks, recursion limit 1000):
``map`` takes the most C stack per level, about 130 bytes (``zip_longest`` 113, ``compress``
and ``groupby`` 81, ``filter`` 65, most others 48, ``chain`` 32); a counted unit between
stretches takes 390-630 (a generator expression 390, a ``__next__`` written in Python 480,
``map(lambda v: list(v), [x])`` 630). 980 generators each over ``map`` 62 deep survive, on the
main thread and in a thread of the default size, and 80 deep crash; 32 leaves the worst
case about half the stack.

Not covered here, as they do not go through these callables: deep chains of generators
(``x = (v for v in x)`` some 40,000 times, then ``next(x)``, crashes CPython 3.11 while it
unwinds the RecursionError), ``hash()`` of deeply nested tuples, and freeing deep nests of
``slice``, ``staticmethod``, ``property``, ``collections.deque`` or ``operator.itemgetter``.
"""

from __future__ import annotations

import builtins
import functools
import gc
import itertools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: How deeply tracked iterators may wrap one another. See the module's docstring.
MAX_NESTING = 32

_native_map = builtins.map
_native_iter = builtins.iter
_native_tee = itertools.tee
_TOO_DEEP = MAX_NESTING + 1

Kind = Callable[[Any, int], int]


def _too_deep(name: str) -> RecursionError:
    return RecursionError(
        f"{name}() would nest lazy iterators more than {MAX_NESTING} deep ({name} of ... of "
        "...), which can overflow the interpreter's stack; build a list in between, e.g. "
        "x = list(map(f, x))"
    )


# -- how deep an object is -------------------------------------------------------------


def _leaf(obj: Any, budget: int) -> int:
    return 0


def _by_bases(obj: Any, budget: int) -> int:
    """An instance of a class missing from ``_KINDS``: a class statement in agent code may
    derive from a tracked iterator, so its bases decide."""
    for klass in type(obj).__mro__[1:]:
        kind = _KINDS.get(klass)
        if kind is not None:
            return kind(obj, budget)
    return 0


#: type -> how to tell the depth of its instances (``_by_bases`` for types missing here).
_KINDS: dict[type, Kind] = {}
_kind_of = _KINDS.get
_referents = gc.get_referents


def _depth(obj: Any, budget: int = _TOO_DEEP) -> int:
    """How many iterators deep ``obj`` is, as far as C code calling ``next`` goes: 0 for
    anything whose ``__next__`` runs no other iterator's, or runs it through a counted call.
    ``budget`` bounds the walk through native iterators: past it, the answer is "too deep".
    """
    return _kind_of(type(obj), _by_bases)(obj, budget)


def _slot_kind(slot: Any) -> Kind:
    read = slot.__get__

    def kind(obj: Any, budget: int) -> int:
        try:
            depth: int = read(obj)
        except AttributeError:  # made without the constructor: assume the worst
            return MAX_NESTING
        return depth

    return kind


def _held_depth(obj: Any, budget: int = _TOO_DEEP, first_only: bool = False) -> int:
    """The depth of the deepest iterator ``obj`` holds, as the garbage collector sees its
    references: map and zip hold their iterators in a tuple, chain an iterator over the
    tuple of its arguments. What a wrapper holds, not what it was given: an object's
    ``__iter__`` may have handed over something deeper than the object."""
    held = _referents(obj)
    if first_only:
        del held[1:]
    deepest = 0
    for ref in held:
        cls = type(ref)
        if cls is _tuple_iterator:
            ref = _referents(ref)
            if not ref:
                continue
            ref = ref[0]
            cls = tuple
        if cls is tuple:
            for item in ref:
                kind = _kind_of(type(item), _by_bases)
                if kind is not _leaf:
                    depth = kind(item, budget)
                    if depth > deepest:
                        deepest = depth
        else:
            kind = _kind_of(cls, _by_bases)
            if kind is not _leaf:
                depth = kind(ref, budget)
                if depth > deepest:
                    deepest = depth
    return deepest


def _given_depth(values: Iterable[Any]) -> int:
    """The depth of the deepest of ``values``, if each is of a type in ``_KINDS`` (whose
    ``iter()`` is itself, or an iterator of no depth); -1 if any is not."""
    deepest = 0
    for value in values:
        kind = _kind_of(type(value))
        if kind is None:
            return -1
        if kind is not _leaf:
            depth = kind(value, _TOO_DEEP)
            if depth > deepest:
                deepest = depth
    return deepest


def _native_kind(first_only: bool) -> Kind:
    """A real (untracked) iterator that wraps others: one deeper than what it holds. Such
    objects reach agent code from host code, or from ``tee`` and ``groupby``."""

    def kind(obj: Any, budget: int) -> int:
        if budget <= 0:
            return _TOO_DEEP
        return 1 + _held_depth(obj, budget - 1, first_only)

    return kind


def _tee_data_kind(obj: Any, budget: int) -> int:
    """tee's shared buffer: as deep as the iterator it reads from, the first thing it holds."""
    if budget <= 0:
        return _TOO_DEEP
    held = gc.get_referents(obj)
    return _depth(held[0], budget - 1) if held else 0


_tuple_iterator = type(_native_iter(()))
_sample_tee: Any = _native_tee(())[0]
_tee_type = type(_sample_tee)
_tee_data_type = type(gc.get_referents(_sample_tee)[0])
_grouper_type = type(next(itertools.groupby([0]))[1])
del _sample_tee

_cls: Any
for _cls in (
    bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset, range,
    type(None), type, type(_native_iter([])), _tuple_iterator, type(_native_iter("")),
    type(_native_iter(range(0))), type(_native_iter(set())), type(_native_iter({})),
    type(_native_iter({}.values())), type(_native_iter({}.items())), type(reversed([])),
    types.GeneratorType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    type(str.upper), staticmethod, functools.partial,
    type(_native_iter(int, 0)), reversed, itertools.count, itertools.repeat,
    itertools.product, itertools.permutations, itertools.combinations,
    itertools.combinations_with_replacement,
):  # fmt: skip
    _KINDS[_cls] = _leaf
_KINDS[_tee_data_type] = _tee_data_kind
_KINDS[_tee_type] = _native_kind(first_only=True)  # its buffer
_KINDS[_grouper_type] = _native_kind(first_only=True)  # its groupby
_KINDS[itertools.groupby] = _native_kind(first_only=True)  # its iterator, not its group
for _cls in (builtins.map, builtins.filter, builtins.zip, builtins.enumerate):
    _KINDS[_cls] = _native_kind(first_only=False)

# -- callbacks and items ------------------------------------------------------------------

#: Classes whose call never iterates an argument, or runs Python code that counts.
_PLAIN_CALLS: set[type] = {bool, int, float, complex, str, range, slice, object}


def _counted(func: Any) -> Any:
    """``func``, or a wrapper whose call counts toward the recursion limit where a call of
    ``func`` itself would not (and might iterate something)."""
    if type(func) is type:
        return func if func in _PLAIN_CALLS else staticmethod(func)
    if isinstance(func, _WRAPPED_CALLS):
        return staticmethod(func)
    return func


_WRAPPED_CALLS = (type, functools.partial)


#: Items whose iteration runs no other iterator's ``__next__``, or runs Python code.
_SELF_CONTAINED = frozenset(
    {list, tuple, str, bytes, bytearray, dict, set, frozenset, range, types.GeneratorType}
)


def _delegate(iterable: Any) -> Iterator[Any]:
    yield from iterable


def _flat_item(item: Any) -> Any:
    """One of ``chain.from_iterable``'s items, iterated through a generator (a counted
    frame) unless it is a plain container."""
    return item if type(item) in _SELF_CONTAINED else _delegate(item)


def _measurable(arg: Any) -> Any:
    """One of chain's arguments: as it is if its depth can be told now, else iterated
    through a generator, since whatever its ``__iter__`` returns later is not measured."""
    return arg if type(arg) in _KINDS else _delegate(arg)


_as_tuple = staticmethod(tuple)


# -- the tracked types ---------------------------------------------------------------------

_SLOTS: dict[type, Any] = {}


def _tracked(
    base: type,
    callback: int | None = None,
    keyword: str | None = None,
    lazy: bool = False,
    **members: Any,
) -> Any:
    """A subclass of ``base`` named as it is, whose instances carry their depth in a slot
    agent code cannot reach (the sandbox refuses ``_`` names on the host's objects).
    ``callback`` is the position (and ``keyword`` the name) of a function argument, which
    is passed on through :func:`_counted`; ``lazy`` says the real type calls ``iter()`` on
    its arguments only when it reaches them (chain)."""
    name = base.__name__
    make = base.__new__
    shown = name if base.__module__ == "builtins" else f"{base.__module__}.{name}"
    own: Any = None
    slot: Any = None

    def __new__(cls: type, /, *args: Any, **kwargs: Any) -> Any:
        if callback is not None:
            if len(args) > callback:
                func = args[callback]
                counted = _counted(func)
                if counted is not func:
                    args = (*args[:callback], counted, *args[callback + 1 :])
            elif keyword is not None and keyword in kwargs:
                kwargs[keyword] = _counted(kwargs[keyword])
        if lazy:  # iter() of an argument runs when it is reached, too late to measure
            args = tuple(_native_map(_measurable, args))
        deepest = _given_depth(args)
        if kwargs and deepest >= 0:
            more = _given_depth(kwargs.values())
            deepest = -1 if more < 0 else max(deepest, more)
        self = make(cls, *args, **kwargs)
        depth = 1 + (deepest if deepest >= 0 else _held_depth(self))
        if depth > MAX_NESTING:
            raise _too_deep(name)
        if cls is own:
            self._nesting = depth
        else:  # a class statement's subclass: its own names cannot stand in the way
            slot.__set__(self, depth)
        return self

    def __repr__(self: Any) -> str:
        if type(self) is not own:
            return object.__repr__(self)
        return f"<{shown} object at {id(self):#x}>"

    namespace = {
        "__slots__": ("_nesting",),
        "__new__": __new__,
        "__repr__": __repr__,
        "__doc__": base.__doc__,
        "__module__": __name__,  # pickled by reference to this module
        "__qualname__": name,
        # Agent classes may derive from it even where it stands in for the real class (in
        # the policy's stand_ins): the class statement then derives from the tracked one.
        "__agex_subclassable__": True,
        **members,
    }
    own = type(name, (base,), namespace)
    slot = own.__dict__["_nesting"]
    _SLOTS[own] = slot
    _KINDS[own] = _slot_kind(slot)
    _PLAIN_CALLS.add(own)  # its constructor is Python code, and counts
    return own


def _made(name: str, cls: type, *args: Any) -> Any:
    """An instance of tracked ``cls``, built for ``name`` (which has one more level)."""
    self = cls.__mro__[1].__new__(cls, *args)
    depth = 1 + _held_depth(self)
    if depth + 1 > MAX_NESTING:
        raise _too_deep(name)
    _SLOTS[cls].__set__(self, depth)
    return self


map = _tracked(builtins.map, callback=0)
filter = _tracked(builtins.filter, callback=0)
zip = _tracked(builtins.zip)
enumerate = _tracked(builtins.enumerate)


def iter(obj: Any, /, *sentinel: Any) -> Any:
    """iter(iterable) -> iterator; iter(callable, sentinel) -> iterator that calls it until
    it returns the sentinel."""
    if not sentinel:
        return _native_iter(obj)
    if len(sentinel) > 1:
        raise TypeError(f"iter expected at most 2 arguments, got {1 + len(sentinel)}")
    return _native_iter(_counted(obj), sentinel[0])


def _from_iterable(cls: type, iterable: Any, /) -> Any:
    items = _made("chain.from_iterable", map, _flat_item, iterable)  # screens its items
    self = _native_from_iterable.__get__(None, cls)(items)
    _SLOTS[chain].__set__(self, 1 + _depth(items))
    return self


_native_from_iterable = itertools.chain.__dict__["from_iterable"]
from_iterable: Any = classmethod(_from_iterable)
from_iterable.__doc__ = _native_from_iterable.__doc__
chain = _tracked(itertools.chain, lazy=True, from_iterable=from_iterable)
del from_iterable


def _starmap_new(cls: type, function: Any, iterable: Any, /) -> Any:
    rows = _made("starmap", map, _as_tuple, iterable)  # makes its argument tuples
    self = itertools.starmap.__new__(cls, _counted(function), rows)
    _SLOTS[starmap].__set__(self, 1 + _depth(rows))
    return self


starmap = _tracked(itertools.starmap, __new__=_starmap_new)
accumulate = _tracked(itertools.accumulate, callback=1, keyword="func")
compress = _tracked(itertools.compress)
cycle = _tracked(itertools.cycle)
dropwhile = _tracked(itertools.dropwhile, callback=0)
filterfalse = _tracked(itertools.filterfalse, callback=0)
groupby = _tracked(itertools.groupby, callback=1, keyword="key")
islice = _tracked(itertools.islice)
pairwise = _tracked(itertools.pairwise)
takewhile = _tracked(itertools.takewhile, callback=0)
zip_longest = _tracked(itertools.zip_longest)


def tee(iterable: Any, n: int = 2, /) -> tuple[Any, ...]:
    copies = _native_tee(iterable, n)
    if copies and _depth(copies[0]) > MAX_NESTING:
        raise _too_deep("tee")
    return copies


tee.__doc__ = _native_tee.__doc__

_ITERTOOLS_CLASSES = {
    "accumulate": accumulate,
    "chain": chain,
    "compress": compress,
    "cycle": cycle,
    "dropwhile": dropwhile,
    "filterfalse": filterfalse,
    "groupby": groupby,
    "islice": islice,
    "pairwise": pairwise,
    "starmap": starmap,
    "takewhile": takewhile,
    "zip_longest": zip_longest,
}
if hasattr(itertools, "batched"):  # Python 3.12+
    batched = _tracked(itertools.batched)
    _ITERTOOLS_CLASSES["batched"] = batched

for _name, _cls in _ITERTOOLS_CLASSES.items():
    _native = getattr(itertools, _name)
    if _native not in _KINDS:  # the real ones agent code meets through host objects
        _KINDS[_native] = _native_kind(first_only=False)


def separated(iterable: Any) -> Any:
    """What a generator expression, or a ``for`` loop in a generator function, iterates: a
    generator as the only item of a tracked ``chain``. CPython 3.11 overflows its C stack
    freeing a long chain of generators each waiting on the next (some 40,000 of
    ``x = (v for v in x)``, once one of them has hit the recursion limit); one C iterator
    between each two keeps that to the recursion limit's depth."""
    if type(iterable) is types.GeneratorType:
        return chain(iterable)
    return iterable


#: Builtin name -> what agent code gets instead.
BUILTINS: dict[str, Any] = {
    "map": map,
    "filter": filter,
    "zip": zip,
    "enumerate": enumerate,
    "iter": iter,
}

#: itertools member -> what agent code gets instead.
ITERTOOLS: dict[str, Any] = {**_ITERTOOLS_CLASSES, "tee": tee}

#: Real class -> its tracked subclass, for ``type(x)`` of a real iterator that reached agent
#: code from host code (``collections.Counter.elements()`` returns a real ``chain``):
#: calling the real class would build untracked iterators.
STAND_INS: dict[type, type] = {
    cls.__mro__[1]: cls for cls in [map, filter, zip, enumerate, *_ITERTOOLS_CLASSES.values()]
}

del _cls, _name, _native
