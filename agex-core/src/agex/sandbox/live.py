"""Live objects: an instance (a database connection, a client) whose methods agent code may
call, registered with ``agent.module(obj, name="db")``.

Agent code holds a :class:`LiveObject`, never the object: a holder of plain functions, one
per allowed method. Each function calls the bound method it closes over; the closure is out
of reach (agent code reads no dunder attribute), so nothing leads from ``db.query`` to the
object, its class, its other attributes or its module's globals.

Every call crosses a *membrane*, both ways. Arguments must be plain data (numbers, strings,
bytes, and lists, tuples, dicts and sets of them), copied on the way in: no function, class
or object of the agent's reaches the host's code, to be called back with the object or to
run later in the trusted process. Results come back copied if they are plain data, as the
registration's view if they are the object, and as a view of their own (public methods
only, behind the same membrane) if they are any other object (a cursor, an iterator);
classes, functions, bound methods, coroutines, futures and event loops are refused.
Exceptions cross too: one the host's code raises reaches agent code as a fresh exception
(see :func:`crossed`), never as the host's own object with what it carries. An interrupt (a
time limit, a cancel) waits until the host's method has returned, and the garbage collector
waits with it, so no code of the agent's runs inside the host's call.

A live object stays in this process: it cannot be pickled, so it neither travels to another
machine nor into a worker process (see ``Agent.module``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

from agex.errors import AccessDenied, CallDenied
from agex.sandbox.machinery import machinery
from agex.sandbox.ownership import agent_owned
from agex.sandbox.signals import Signal, current_run


class Live(NamedTuple):
    """What the policy keeps of a live registration: the object's type (as the model is told
    it) and its allowed methods, bound."""

    kind: str
    methods: dict[str, Callable[..., Any]]


def methods_of(obj: Any, allows: Callable[[str], bool]) -> dict[str, Callable[..., Any]]:
    """The bound methods of ``obj`` whose names ``allows``: functions and method descriptors
    of its class (or itself), never properties or data, which are read, not called."""
    found = {}
    for attr in sorted(dir(obj)):
        if not allows(attr):
            continue
        try:
            member = inspect.getattr_static(obj, attr)
        except AttributeError:
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if not (inspect.isroutine(member) or inspect.ismethoddescriptor(member)):
            continue
        bound = getattr(obj, attr)
        if callable(bound):
            found[attr] = bound
    return found


class LiveObject:
    """What agent code holds for a live object, or for an object one of its methods
    returned: its allowed methods, by name, each behind the membrane."""

    __slots__ = ("_kind", "_known", "_members", "_name", "_target")

    def __init__(self, obj: Any, name: str, live: Live, known: Known | None = None) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_kind", live.kind)
        object.__setattr__(self, "_target", obj)
        object.__setattr__(self, "_known", {} if known is None else known)
        members = {attr: _calling(self, attr, m) for attr, m in live.methods.items()}
        object.__setattr__(self, "_members", members)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # protocol probes (copy, pickle); and no member is private
            raise AttributeError(attr)
        members = self._members
        try:
            return members[attr]
        except KeyError:
            raise AccessDenied(
                f"{self._name}.{attr} is not available to agent code; {self._name} offers "
                + (", ".join(sorted(members)) or "no methods")
            ) from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AccessDenied(f"{self._name} is a live object: its attributes cannot be set")

    def __delattr__(self, attr: str) -> None:
        raise AccessDenied(f"{self._name} is a live object: its attributes cannot be deleted")

    def __dir__(self) -> list[str]:
        return sorted(self._members)

    def __repr__(self) -> str:
        return f"<live {self._kind} {self._name}>"

    def __iter__(self) -> Iterator[Any]:
        """``for row in cursor``: the object's own iteration, each item crossing back as a
        method's result does."""
        target, where, known = self._target, f"an item of {self._name}", self._known
        iterator = _held(where, known, iter, target)
        while True:
            try:
                item = _held(where, known, next, iterator)
            except StopIteration:
                return
            yield returned(item, where, known)

    def __next__(self) -> Any:
        where = f"next({self._name})"
        return returned(_held(where, self._known, next, self._target), where, self._known)

    def __bool__(self) -> bool:
        # without it, truth would ask __len__
        return _held(f"bool({self._name})", self._known, bool, self._target) is True

    def __len__(self) -> int:
        size = _held(f"len({self._name})", self._known, len, self._target)
        if type(size) is not int:
            raise TypeError(f"len({self._name}) is not an int")
        return size

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"{self._name} is a live object ({self._kind}): it stays in the process that "
            "registered it and cannot be copied to another process or machine; run the agent "
            'here, on the local host with isolation="none", or register functions that open '
            "their own connection where the agent runs"
        )


#: id of a registered live object -> the object (held, so that its id stays its own) and
#: its view: a result that is one of them comes back as its view.
Known = dict[int, tuple[Any, LiveObject]]


def _calling(view: LiveObject, attr: str, method: Callable[..., Any]) -> Any:
    """A plain function calling ``method`` across the membrane: what ``db.attr`` is in agent
    code."""
    where = f"{view._name}.{attr}(...)"
    asynchronous = inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        if asynchronous:
            raise CallDenied(
                f"{where} is an async method: agent code cannot wait on the host's event loop; "
                "register an object whose methods are synchronous (a wrapper that runs the "
                "call to completion)"
            )
        args = tuple(plain_argument(a, f"argument {i + 1} of {where}") for i, a in enumerate(args))
        kwargs = {k: plain_argument(v, f"argument {k}= of {where}") for k, v in kwargs.items()}
        return returned(_held(where, view._known, method, *args, **kwargs), where, view._known)

    call.__name__ = attr  # its qualified name stays local: state refuses to store it
    call.__doc__ = inspect.getdoc(method)
    return call


#: Values that hold nothing else.
PLAIN_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})
#: Containers whose items cross the membrane one by one (exactly these types: a subclass of
#: one is a class of its own, perhaps the agent's).
PLAIN_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
#: How deep the membrane looks into containers.
MAX_DEPTH = 20


def plain_argument(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as a host method gets it: a copy of plain data, a view as its object; or
    CallDenied, naming the argument, for anything else (the agent's functions, classes and
    objects, and the host's callables: the host would call them, or keep them and run
    them later, in the trusted process)."""
    kind = type(value)
    if kind in PLAIN_SCALARS:
        return value
    if kind is LiveObject:
        return value._target  # the host's own object, back to the host
    if kind in PLAIN_CONTAINERS:
        if depth >= MAX_DEPTH:
            raise CallDenied(f"{where} is nested more than {MAX_DEPTH} deep; pass flatter data")
        if kind is dict:
            return {
                plain_argument(k, where, depth + 1): plain_argument(v, where, depth + 1)
                for k, v in dict.items(value)
            }
        return kind(plain_argument(item, where, depth + 1) for item in value)
    raise CallDenied(
        f"{where} is {_a(value)}; a live object's methods take plain data only (None, bool, "
        "int, float, complex, str, bytes, and lists, tuples, dicts and sets of them), so no "
        "code of the agent's runs inside them: pass the data itself"
    )


def returned(value: Any, where: str, known: Known, depth: int = 0) -> Any:
    """``value``, which the host's code returned (or yielded), as agent code gets it."""
    kind = type(value)
    if kind in PLAIN_SCALARS or kind is LiveObject:
        return value
    held = known.get(id(value))
    if held is not None and held[0] is value:
        return held[1]
    if kind in PLAIN_CONTAINERS:
        # A copy: agent code neither changes the host's own container nor puts its objects in
        if depth >= MAX_DEPTH:
            raise AccessDenied(f"{where} is nested more than {MAX_DEPTH} deep")
        if kind is dict:
            return {
                returned(k, where, known, depth + 1): returned(v, where, known, depth + 1)
                for k, v in dict.items(value)
            }
        return kind(returned(item, where, known, depth + 1) for item in value)
    if agent_owned(value):  # the agent's own object, come back: it had it already
        return value
    refused = _refused(value)
    if refused is not None:
        raise AccessDenied(
            f"{where} is {refused}, which agent code may not hold; a live object's methods "
            "give agent code plain data, views of objects, or the live object itself"
        )
    methods = methods_of(value, _public)
    return LiveObject(value, where, Live(kind_of(value), methods), known)


def _refused(value: Any) -> str | None:
    """Why ``value`` may not cross back to agent code even as a view, or None."""
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, ModuleType):
        return f"the module {value.__name__!r}"
    if inspect.iscoroutine(value):
        value.close()  # never run: its code would have run on the host's event loop
        return "a coroutine (from an async method)"
    if inspect.isawaitable(value) or inspect.isasyncgen(value):
        return "an awaitable"
    found = machinery(value)
    if found is not None:
        return found
    if inspect.isroutine(value):
        return "a function or method (one the registration may have left out)"
    return None


def _public(name: str) -> bool:
    return not name.startswith("_")


def _a(value: Any) -> str:
    if isinstance(value, type):
        return f"a class ({value.__name__})"
    if callable(value):
        return f"a function or other callable ({type(value).__name__})"
    return f"a {type(value).__name__} object"


def _held(where: str, known: Known, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``work(...)``, the host's code, with the run's interrupts held until it returns (an
    interrupt arriving half way through would leave the host's object half updated), and its
    exception crossing back as :func:`crossed` makes it. The sandbox's own signals (a time
    limit, a cancel, a task's outcome) pass as they are."""
    run = current_run()
    watch = getattr(run, "watch", None)
    try:
        if watch is not None:
            watch.hold()
        try:
            return work(*args, **kwargs)
        except Signal:
            raise
        except BaseException as exc:
            fresh = crossed(exc, where, known)
        raise fresh from None
    finally:
        if watch is not None:
            watch.release()


def crossed(exc: BaseException, where: str, known: Known) -> BaseException:
    """A fresh exception standing for ``exc``, which the host's code raised: a builtin
    exception type again, with its arguments as :func:`told` gives them (a StopIteration's
    value with them); any other type as a RuntimeError naming it and its message. Nothing
    of the original is kept: not its attributes (a driver's session, a retry callback), nor
    its cause, context or traceback, which lead back into the host's frames."""
    kind = type(exc)
    if kind.__module__ == "builtins":
        try:
            return kind(*(told(arg, known) for arg in exc.args))
        except Exception:  # a type whose arguments must be objects (an ExceptionGroup's)
            pass
    return RuntimeError(f"{where} raised {kind_of(exc)}: {_text(exc)}")


def told(value: Any, known: Known) -> Any:
    """An exception's argument as agent code gets it: plain data copied, a registered live
    object as its view, anything else as its text. Never a view of another object: an
    exception's arguments are what it reports, not something to call."""
    try:
        return _data(value, known, 0)
    except _NotData:
        return _text(value)


class _NotData(Exception):
    pass


def _data(value: Any, known: Known, depth: int) -> Any:
    kind = type(value)
    if kind in PLAIN_SCALARS or kind is LiveObject:
        return value
    held = known.get(id(value))
    if held is not None and held[0] is value:
        return held[1]
    if kind in PLAIN_CONTAINERS and depth < MAX_DEPTH:
        if kind is dict:
            return {
                _data(k, known, depth + 1): _data(v, known, depth + 1) for k, v in dict.items(value)
            }
        return kind(_data(item, known, depth + 1) for item in value)
    raise _NotData


def _text(value: Any) -> str:
    """``str(value)``, computed here on the trusted side; its type's name if that fails."""
    try:
        text = str(value)
    except Exception:
        return f"<{kind_of(value)} object>"
    return text if type(text) is str else f"<{kind_of(value)} object>"


def kind_of(obj: Any) -> str:
    """The type of ``obj`` as the model is told it."""
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def check_live(obj: Any, name: str | None) -> str:
    """The name a live object is registered under, or an error saying what to pass instead."""
    if isinstance(obj, type):
        raise TypeError(
            f"module() registers modules and live objects; {obj.__name__} is a class: "
            "register it with agent.cls(...)"
        )
    if obj is None:
        raise TypeError("module() registers modules and live objects; got None")
    if inspect.isroutine(obj):
        raise TypeError(
            f"module() registers modules and live objects; {getattr(obj, '__name__', obj)!r} "
            "is a function: register it with agent.fn(...)"
        )
    if name is None:
        raise ValueError(
            f"a live object ({kind_of(obj)}) needs the name agent code calls it by: "
            'agent.module(obj, name="db")'
        )
    return name
