"""A task's value across a remote boundary, in a form that cannot run code where it lands.

The far side pickles the value with plain pickle, naming the classes the task's return
annotation names by module and qualified name without importing them. The caller
loads it with a loader that admits only those classes (found in its own annotation, so a
class the caller defined in a script is the caller's own), builtin containers and scalars,
and a few standard value types; any other name in the bytes (a function to call, a module to
import) is refused before anything is built, with an error naming it.

A numpy array, a pandas Series or a pandas DataFrame, when the annotation names its class,
crosses as plain data (a dtype from a short list, a shape and the raw bytes; per column, such
an array or a list of plain values; index labels) that the loader rebuilds with numpy's and
pandas' public constructors: never as their own pickles, whose helpers would take arguments of
the far side's choosing.

So a server, or anything that answers at its address, can at worst send back a wrong value
of the annotated types: never run code in the caller.
"""

from __future__ import annotations

import dataclasses
import decimal
import importlib
import io
import math
import pickle
import pickletools
import re
import sys
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

#: The tags under which an array, a Series and a DataFrame cross as plain data, with the
#: class each stands for: the loader rebuilds them itself, and only when the annotation names
#: that class.
_ARRAY, _SERIES, _FRAME = "agex-ndarray", "agex-series", "agex-frame"
_DATA_CLASSES = {
    _ARRAY: ("numpy", "ndarray"),
    _SERIES: ("pandas", "Series"),
    _FRAME: ("pandas", "DataFrame"),
}
#: The dtypes an array crosses with, as ``dtype.str`` spells them: booleans, integers, floats,
#: complex numbers, datetime64 and timedelta64, fixed-width text and bytes. Each is nothing
#: but its bytes: no object dtype (pointers), no structured or void dtype.
ARRAY_DTYPES = re.compile(
    r"\|b1|\|[iu]1|[<>][iu][248]|[<>]f[248]|[<>]c(?:8|16)"
    r"|[<>][Mm]8\[(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\]|[<>]U[1-9]\d{0,7}|\|S[1-9]\d{0,7}"
)
#: Most dimensions an array is rebuilt with (numpy's own limit).
MAX_DIMS = 64
#: How a column of text or other objects crosses: as a list, with pandas' text dtypes by name.
_OBJECT_KINDS = ("object", "str", "string")


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
    if origin is not None and _data_tag(origin) is not None:
        found.append(origin)  # numpy.typing.NDArray[...]: its parameters describe its bytes
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


def _data_tag(cls: Any) -> str | None:
    """The tag ``cls`` crosses under as plain data, if it is numpy's array or pandas' Series or
    DataFrame; found among the modules already loaded, so that nothing imports them here."""
    for tag, (module, name) in _DATA_CLASSES.items():
        loaded = sys.modules.get(module)
        if loaded is not None and cls is getattr(loaded, name, None):
            return tag
    return None


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
    return _Unpickler(io.BytesIO(data), named_types(annotation), len(data)).load()


class _Node:
    """What the shape check knows of one object on the stack: how deep it nests, and how
    many objects it holds counting a shared one each time it is used."""

    __slots__ = ("built", "depth", "weight")

    def __init__(self, depth: int = 0, weight: int = 1, built: bool = False) -> None:
        self.depth, self.weight = depth, weight
        #: Made by a call in these bytes (an instance): the only thing BUILD may set state on.
        self.built = built

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
                if name == "BUILD" and not top().built:
                    # Setting state on a class named in the bytes (or on a container) would
                    # change that class for the whole process, before any check.
                    raise RefusedValue("the value's bytes set state on something no call made")
                top().holds([item])
            elif name == "SETITEM":
                items = [stack.pop(), stack.pop()]
                top().holds(items)
            elif name in ("REDUCE", "NEWOBJ", "STACK_GLOBAL"):
                items = [stack.pop(), stack.pop()]
                stack.append(_Node(built=name != "STACK_GLOBAL").holds(items))
            elif name == "NEWOBJ_EX":
                items = [stack.pop(), stack.pop(), stack.pop()]
                stack.append(_Node(built=True).holds(items))
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
        # Only a process that made an array or a frame has numpy or pandas loaded.
        self._numpy, self._pandas = sys.modules.get("numpy"), sys.modules.get("pandas")

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type):
            return (_TAG, obj.__module__, obj.__qualname__) if id(obj) in self._named else None
        if self._numpy is not None and isinstance(obj, self._numpy.ndarray):
            _exact(obj, self._numpy.ndarray, "numpy.asarray(value)")
            return (_ARRAY, *_array_form(obj, "the array"))
        pd = self._pandas
        if pd is not None and isinstance(obj, pd.Series):
            _exact(obj, pd.Series, "pandas.Series(value)")
            where = "the Series" if obj.name is None else f"the Series {_shown(obj.name)}"
            index = _index_form(obj.index, f"{where}'s index", pd)
            return (_SERIES, _column_form(obj, where, pd), index, _plain(obj.name))
        if pd is not None and isinstance(obj, pd.DataFrame):
            _exact(obj, pd.DataFrame, "pandas.DataFrame(value)")
            columns = [
                _column_form(obj.iloc[:, i], f"column {_shown(label)}", pd)
                for i, label in enumerate(obj.columns)
            ]
            index = _index_form(obj.index, "the DataFrame's index", pd)
            return (_FRAME, columns, index, _index_form(obj.columns, "its columns", pd))
        return None


def _exact(obj: Any, cls: type, instead: str) -> None:
    if type(obj) is not cls:
        kind = type(obj)
        raise pickle.PicklingError(
            f"a {kind.__module__}.{kind.__qualname__} crosses only as a plain "
            f"{cls.__module__.split('.')[0]}.{cls.__name__}: return {instead}"
        )


def _array_form(array: Any, where: str) -> tuple[str, tuple[int, ...], bytes]:
    """An array as its dtype, its shape and its bytes (C order)."""
    text = array.dtype.str
    if not ARRAY_DTYPES.fullmatch(text):
        raise pickle.PicklingError(
            f"{where} has dtype {array.dtype}, which does not cross: an array crosses with a "
            "bool, integer, float, complex, datetime64, timedelta64, str or bytes dtype; convert "
            "it (e.g. .astype(float)) or return .tolist()"
        )
    return text, tuple(int(n) for n in array.shape), array.tobytes()


def _column_form(values: Any, where: str, pd: Any) -> tuple[Any, ...]:
    """A Series' or an Index's values: an array, a list of objects (or of text, for pandas'
    text dtypes, with None where one is missing), or a categorical's codes and categories."""
    dtype = values.dtype
    if isinstance(dtype, sys.modules["numpy"].dtype):
        if dtype.kind == "O":
            return ("objects", "object", [_plain(item) for item in values.to_numpy().tolist()])
        return ("array", *_array_form(values.to_numpy(), where))
    if isinstance(dtype, pd.StringDtype) and str(dtype) in _OBJECT_KINDS:
        return ("objects", str(dtype), values.to_numpy(dtype=object, na_value=None).tolist())
    if isinstance(dtype, pd.CategoricalDtype):
        categorical = values.array
        codes = ("array", *_array_form(categorical.codes, where))
        categories = _column_form(categorical.categories, f"{where}'s categories", pd)
        return ("category", codes, categories, bool(categorical.ordered))
    raise pickle.PicklingError(
        f"{where} has dtype {dtype}, which does not cross: convert it to a numpy dtype first "
        "(e.g. .astype('float64') for nullable numbers, .dt.tz_convert(None) for a time zone, "
        ".astype(str) for periods or intervals)"
    )


def _index_form(index: Any, where: str, pd: Any) -> tuple[Any, ...]:
    if type(index) is pd.RangeIndex:
        return ("range", index.start, index.stop, index.step, _plain(index.name))
    if type(index) is pd.MultiIndex:
        levels = [
            _column_form(index.get_level_values(i), f"{where} (level {i})", pd)
            for i in range(index.nlevels)
        ]
        return ("multi", levels, [_plain(name) for name in index.names])
    return ("index", _column_form(index, where, pd), _plain(index.name))


def _plain(item: Any) -> Any:
    """A numpy number, bool or text as Python's own: pandas hands them out as labels (a row's
    Series is named by its index label) and as a row's values, and their own pickle is
    numpy's."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(item, numpy.generic) and item.dtype.kind in "biufcSU":
        return item.item()
    return item


def _shown(label: Any) -> str:
    return repr(label)[:100]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, named: list[type], size: int) -> None:
        super().__init__(file)
        # An array's or a frame's class is not admitted by name: it rebuilds only from its
        # plain form, by the loader's own code.
        self._by_name = {
            (cls.__module__, cls.__qualname__): cls for cls in named if _data_tag(cls) is None
        }
        self._tags = {tag for cls in named if (tag := _data_tag(cls)) is not None}
        self._size = size
        self._rebuild: _Rebuild | None = None

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and type(pid[0]) is str and pid[0] in _DATA_CLASSES:
            return self._data(pid)
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

    def _data(self, pid: tuple[Any, ...]) -> Any:
        tag = pid[0]
        module, name = _DATA_CLASSES[tag]
        if tag not in self._tags:
            raise RefusedValue(
                f"the value holds a {module}.{name}, which the task's return annotation does "
                f"not name, and was not loaded (name {module}.{name} there if the task "
                "returns one)"
            )
        if self._rebuild is None:
            self._rebuild = _Rebuild(self._size, WEIGHT_FLOOR + WEIGHT_PER_BYTE * self._size)
        try:
            if tag == _ARRAY:
                return self._rebuild.array(("array", *pid[1:]))
            if tag == _SERIES:
                return self._rebuild.series(pid)
            return self._rebuild.frame(pid)
        except RefusedValue:
            raise
        except Exception as exc:  # numpy's or pandas' own checks of the parts
            raise RefusedValue(
                f"the value's {module}.{name} could not be rebuilt from its parts: "
                f"{type(exc).__name__}: {str(exc)[:200]}"
            ) from None

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("decimal", "Decimal"):
            return _decimal
        if (module, name) in SAFE:
            return super().find_class(module, name)
        named = self._by_name.get((module, name))
        if named is not None:
            return named
        hint = ""
        if module.partition(".")[0] in ("numpy", "pandas"):
            hint = (
                "; numpy arrays and pandas Series and DataFrames cross only as agex's plain "
                "form of them (agex.remote.values.dumps), never as their own pickles"
            )
        raise RefusedValue(
            f"the value holds {module}.{name}, which the task's return annotation does not "
            "name, and was not loaded: a remote task's value holds plain data and instances of "
            "the classes its return annotation names (name the class there if the task "
            f"returns it){hint}"
        )


def _malformed(what: str) -> RefusedValue:
    return RefusedValue(f"the value's bytes are malformed ({what})")


def _parts(form: Any, kind: str, count: int) -> tuple[Any, ...]:
    if type(form) is not tuple or len(form) != count or form[0] != kind:
        raise _malformed(f"not a {kind} form")
    return form


class _Rebuild:
    """Arrays, Series and DataFrames rebuilt from their plain form with numpy's and pandas'
    public constructors, every part checked first: the far side chose all of it. What they
    allocate is bounded by the value's bytes: every array's bytes and every listed object
    are counted against them, so bytes or a list used over and over (memo) are refused."""

    def __init__(self, size: int, rows: int) -> None:
        self.np = importlib.import_module("numpy")
        self.pd = importlib.import_module("pandas") if "pandas" in sys.modules else None
        self.left, self.rows = size, rows

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise RefusedValue(
                "the value's arrays hold more than its bytes (the same bytes used over and over)"
            )

    def array(self, form: Any) -> Any:
        _, dtype, shape, raw = _parts(form, "array", 4)
        if type(dtype) is not str or not ARRAY_DTYPES.fullmatch(dtype):
            raise RefusedValue(
                f"the value holds an array of dtype {_shown(dtype)}, which was not loaded: an "
                "array crosses with a bool, integer, float, complex, datetime64, timedelta64, "
                "str or bytes dtype"
            )
        if (
            type(shape) is not tuple
            or len(shape) > MAX_DIMS
            or any(type(n) is not int or n < 0 for n in shape)
            or type(raw) is not bytes
        ):
            raise _malformed("an array's shape or bytes")
        np = self.np
        kind = np.dtype(dtype)
        if math.prod(shape) * kind.itemsize != len(raw):
            raise RefusedValue(
                f"the value holds an array of shape {_shown(shape)} and dtype {dtype} that "
                f"carries {len(raw)} bytes, not the {_shown(math.prod(shape) * kind.itemsize)} "
                "it needs: not loaded"
            )
        self.spend(len(raw))
        if kind.kind == "U" and raw and np.frombuffer(raw, f"{dtype[0]}u4").max() > 0x10FFFF:
            raise RefusedValue("the value holds text beyond Unicode's last character: not loaded")
        if kind.kind == "b":  # any byte but 0 is True, as numpy reads it
            flat = np.frombuffer(raw, np.uint8) != 0
        else:
            flat = np.frombuffer(raw, kind).copy()
        return flat.reshape(shape)

    def column(self, form: Any, categorical: bool = True) -> Any:
        """One-dimensional values: a numpy array, or a pandas array for text and categories."""
        kind = form[0] if type(form) is tuple and form else None
        if kind == "array":
            values = self.array(form)
            if values.ndim != 1:
                raise _malformed("a column of more than one dimension")
            return values
        if kind == "objects":
            _, dtype, items = _parts(form, "objects", 3)
            if type(items) is not list or dtype not in _OBJECT_KINDS:
                raise _malformed("a column of objects")
            self.spend(len(items))
            if dtype == "object":
                values = self.np.empty(len(items), dtype=object)
                for i, item in enumerate(items):  # one by one: a list item stays one element
                    values[i] = item
                return values
            if not all(type(item) is str or item is None for item in items):
                raise _malformed("a text column holding other than text")
            return self.pandas().array(items, dtype=self.text(dtype))
        if kind == "category" and categorical:
            _, codes, categories, ordered = _parts(form, "category", 4)
            codes = self.column(codes, categorical=False)
            if codes.dtype.kind != "i" or type(ordered) is not bool:
                raise _malformed("a categorical's codes")
            categories = self.index_of(self.column(categories, categorical=False))
            return self.pandas().Categorical.from_codes(codes, categories, ordered=ordered)
        raise _malformed("not a column form")

    def text(self, dtype: str) -> Any:
        """pandas' text dtype the column had: ``str`` (missing is NaN) or ``string`` (NA)."""
        pd = self.pandas()
        if dtype == "string":
            return pd.StringDtype()
        try:
            return pd.StringDtype(na_value=self.np.nan)
        except TypeError:  # a pandas before 2.3 has no such dtype: plain strings, then
            return object

    def index_of(self, values: Any, name: Any = None) -> Any:
        # The dtype stays the column's: pandas would otherwise read a column of strings as text.
        return self.pandas().Index(values, dtype=values.dtype, name=name)

    def index(self, form: Any) -> Any:
        pd = self.pandas()
        kind = form[0] if type(form) is tuple and form else None
        if kind == "range":
            _, start, stop, step, name = _parts(form, "range", 5)
            if any(type(n) is not int for n in (start, stop, step)) or step == 0:
                raise _malformed("a range index")
            if len(range(start, stop, step)) > self.rows:
                raise RefusedValue("the value holds a range index far longer than its bytes")
            return pd.RangeIndex(start, stop, step, name=name)
        if kind == "index":
            _, values, name = _parts(form, "index", 3)
            return self.index_of(self.column(values), name)
        if kind == "multi":
            _, levels, names = _parts(form, "multi", 3)
            if type(levels) is not list or type(names) is not list or len(names) != len(levels):
                raise _malformed("a multi-index")
            arrays = [self.index_of(self.column(level)) for level in levels]
            return pd.MultiIndex.from_arrays(arrays, names=names)
        raise _malformed("not an index form")

    def series(self, pid: tuple[Any, ...]) -> Any:
        _, values, index, name = _parts(pid, _SERIES, 4)
        values, index = self.column(values), self.index(index)
        if len(values) != len(index):
            raise _malformed("a Series whose index is not as long as its values")
        return self.pandas().Series(values, index=index, dtype=values.dtype, name=name)

    def frame(self, pid: tuple[Any, ...]) -> Any:
        _, columns, index, labels = _parts(pid, _FRAME, 4)
        if type(columns) is not list:
            raise _malformed("a DataFrame's columns")
        pd = self.pandas()
        arrays = [self.column(column) for column in columns]
        index, labels = self.index(index), self.index(labels)
        if len(labels) != len(arrays) or any(len(a) != len(index) for a in arrays):
            raise _malformed("a DataFrame whose columns or index do not match")
        rows = pd.RangeIndex(len(index))  # positional: nothing aligns on labels
        frame = pd.DataFrame(
            {i: pd.Series(a, index=rows, dtype=a.dtype) for i, a in enumerate(arrays)},
            index=rows,
        )
        frame.index, frame.columns = index, labels
        return frame

    def pandas(self) -> Any:
        if self.pd is None:  # only a forged tag gets here: the annotation names pandas
            raise _malformed("pandas data for an annotation that names no pandas class")
        return self.pd


def _decimal(text: Any) -> decimal.Decimal:
    """A Decimal as its pickle rebuilds it: from its text, of a bounded length."""
    if type(text) is not str or len(text) > DECIMAL_TEXT:
        raise RefusedValue(f"a Decimal is rebuilt from text of at most {DECIMAL_TEXT} characters")
    return decimal.Decimal(text)


__all__ = ["SAFE", "RefusedValue", "check_shape", "dumps", "loads", "named_types"]
