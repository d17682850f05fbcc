"""What agent code may reach: the functions, classes and modules a developer registered,
harmless builtins, and a small safe part of the standard library.

Modules reach agent code as *views*: fresh module objects holding only the members the
policy allows, so a registered module's own imports (its ``os``, its ``sys``) are simply not
there. A view is built once per policy and module.
"""

from __future__ import annotations

import builtins
import enum
import fnmatch
import importlib
import types
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, NamedTuple

from agex.errors import AccessDenied, CallDenied, ImportDenied
from agex.sandbox import nesting
from agex.sandbox.live import Known, Live, LiveObject, check_live, kind_of, methods_of
from agex.sandbox.machinery import machinery
from agex.sandbox.stdlib import MUTABLE, REPLACED, SAFE_MODULES, UNCONSTRUCTABLE, PerPolicy

#: Builtins agent code gets as they are.
SAFE_BUILTINS = [
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "hash",
    "hex",
    "id",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "object",
    "oct",
    "ord",
    "pow",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "zip",
    "aiter",
    "anext",
    "NotImplemented",
    "Ellipsis",
    "BaseException",
    "Exception",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BufferError",
    "EOFError",
    "FloatingPointError",
    "ImportError",
    "IndexError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "RecursionError",
    "ReferenceError",
    "RuntimeError",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
    "ExceptionGroup",
    "BaseExceptionGroup",
    "Warning",
    "UserWarning",
    "DeprecationWarning",
    "RuntimeWarning",
]

#: Names agent code may not use, with what to do instead.
FORBIDDEN_NAMES = {
    "eval": "run code directly instead",
    "exec": "run code directly instead",
    "compile": "run code directly instead",
    "open": "files are not reachable; use the registered functions",
    "input": "there is no one to answer; return task_clarify(...) to ask",
    "breakpoint": "there is no debugger",
    "help": "read the documentation in your instructions",
    "globals": "name the variables directly",
    "locals": "name the variables directly",
    "vars": "name the attributes directly",
    "memoryview": "use bytes or bytearray",
    "exit": "finish with task_success(...) or task_fail(...)",
    "quit": "finish with task_success(...) or task_fail(...)",
}

#: Builtin objects that are never handed to agent code, however it reaches for them.
NEVER = frozenset(
    id(getattr(builtins, name))
    for name in [*FORBIDDEN_NAMES, "__import__", "getattr", "setattr", "delattr", "type"]
    if hasattr(builtins, name)
)


#: How prominently a registration is described to the model, most first: its signature and
#: docstring, its signature only, or its name only. What agent code may call is the same.
VISIBILITIES = ("high", "medium", "low")


class Description(NamedTuple):
    """How the system prompt describes one registration."""

    visibility: str = "high"
    #: What the model reads instead of the object's own docstring.
    doc: str | None = None


def describe(visibility: object, docstring: object) -> Description:
    """The description a registration asked for, checked."""
    if visibility not in VISIBILITIES:
        raise ValueError(
            f"visibility must be one of {', '.join(map(repr, VISIBILITIES))}, got {visibility!r}"
        )
    if docstring is not None and not isinstance(docstring, str):
        raise TypeError(f"docstring must be a string, got {type(docstring).__name__}")
    return Description(str(visibility), docstring)


class Members:
    """Which member names of a class or module are exposed: those matching an include
    pattern and no exclude pattern (fnmatch patterns, e.g. ``"get_*"``)."""

    def __init__(self, include: Iterable[str], exclude: Iterable[str]) -> None:
        self.include = tuple([include] if isinstance(include, str) else include)
        self.exclude = tuple([exclude] if isinstance(exclude, str) else exclude)
        self._seen: dict[str, bool] = {}

    def allows(self, name: str) -> bool:
        allowed = self._seen.get(name)
        if allowed is None:
            allowed = any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
                fnmatch.fnmatchcase(name, p) for p in self.exclude
            )
            self._seen[name] = allowed
        return allowed


class ClassRule(Members):
    def __init__(
        self, cls: type, include: Iterable[str], exclude: Iterable[str], constructable: bool
    ) -> None:
        super().__init__(include, exclude)
        self.cls = cls
        self.constructable = constructable


class Policy:
    """The registrations agent code runs against. Register with :meth:`fn`, :meth:`cls`
    and :meth:`module`; a :class:`~agex.sandbox.Sandbox` enforces the result."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}  # bound in every namespace
        self.classes: dict[type, ClassRule] = {}
        # class -> what agent code sees instead: lazy iterators that count their nesting,
        # and stand-ins for classes agent code may not construct
        self.stand_ins: dict[type, type] = dict(nesting.STAND_INS)
        self.real: dict[type, type] = {}  # stand-in -> the class it stands for
        self.modules: dict[str, Members] = {}
        self.descriptions: dict[str, Description] = {}  # of the names bound
        self.module_descriptions: dict[str, Description] = {}
        self.live: dict[str, Live] = {}  # name -> what a live object offers
        # id of a live object -> the object (held, so that its id stays its own) and its view
        self._live_views: Known = {}
        self._views: dict[str, ModuleType] = {}
        self.shared: set[int] = set()  # ids of module members: the process's, not the agent's
        self._class_rules: dict[type, ClassRule | None] = {}

    # -- registration ------------------------------------------------------------------

    def fn(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        visibility: str = "high",
        docstring: str | None = None,
    ) -> None:
        """Let agent code call ``func`` by ``name`` (default: its own name)."""
        if not callable(func):
            raise TypeError(f"fn() registers functions; got {type(func).__name__}")
        self._bind(name or func.__name__, func, describe(visibility, docstring))

    def cls(
        self,
        cls: type,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
        constructable: bool = True,
        name: str | None = None,
        visibility: str = "high",
        docstring: str | None = None,
    ) -> None:
        """Let agent code use ``cls``: the members matching ``include`` and not ``exclude``,
        and construct instances unless ``constructable`` is False."""
        if not isinstance(cls, type):
            raise TypeError(f"cls() registers classes; got {type(cls).__name__}")
        description = describe(visibility, docstring)
        rule = ClassRule(cls, include, exclude, constructable)
        self.classes[cls] = rule
        self._class_rules.clear()
        exposed: Any = cls
        for stand_in in [
            s for c, s in self.stand_ins.items() if s in self.real and issubclass(c, cls)
        ]:
            del self.stand_ins[self.real.pop(stand_in)]  # made for an older rule
        if not constructable:
            exposed = self._stand_in(cls, subclassable=False)
        self._views.clear()
        self._bind(name or cls.__name__, exposed, description)

    def module(
        self,
        module: ModuleType | str,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
        visibility: str = "low",
        docstring: str | None = None,
    ) -> None:
        """Let agent code ``import`` a module, seeing the members matching ``include`` and
        not ``exclude``. Its submodules stay out unless registered too."""
        description = describe(visibility, docstring)
        if isinstance(module, str):
            module = importlib.import_module(module)
        if not isinstance(module, ModuleType):
            raise TypeError(f"module() registers modules; got {type(module).__name__}")
        self.modules[module.__name__] = Members(include, exclude)
        self.module_descriptions[module.__name__] = description
        self._views.clear()

    def live_object(
        self,
        obj: Any,
        name: str | None,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
        visibility: str = "high",
        docstring: str | None = None,
    ) -> LiveObject:
        """Let agent code call the methods of ``obj`` (an instance: a connection, a client)
        matching ``include`` and not ``exclude``, as ``name.method(...)``; the object itself,
        its class and its other attributes stay out of reach."""
        description = describe(visibility, docstring)
        name = check_live(obj, name)
        live = Live(kind_of(obj), methods_of(obj, Members(include, exclude).allows))
        view = LiveObject(obj, name, live, self._live_views)
        self._bind(name, view, description)
        self.live[name] = live
        self._live_views[id(obj)] = (obj, view)
        self._views.clear()  # a module's view built earlier may hold the object itself
        return view

    def _bind(self, name: str, value: Any, description: Description) -> None:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"{name!r} cannot be a name in agent code: use a public identifier")
        replaced = self.names.get(name)
        if isinstance(replaced, LiveObject):
            for key in [k for k, held in self._live_views.items() if held[1] is replaced]:
                del self._live_views[key]  # in place: the views share this dict
            self._views.clear()
        self.names[name] = value
        self.descriptions[name] = description
        self.live.pop(name, None)

    # -- questions the guards ask -----------------------------------------------------

    def importable(self, name: str) -> bool:
        return name in self.modules or name in SAFE_MODULES

    def importable_names(self) -> list[str]:
        return sorted({*self.modules, *SAFE_MODULES})

    def class_rule(self, obj: Any) -> ClassRule | None:
        """The registration governing ``obj`` (a class or an instance), if any."""
        cls = obj if isinstance(obj, type) else type(obj)
        cls = self.real.get(cls, cls)
        try:
            return self._class_rules[cls]
        except KeyError:
            rule = next((self.classes[k] for k in cls.__mro__ if k in self.classes), None)
            self._class_rules[cls] = rule
            return rule
        except TypeError:  # unhashable metaclass instance
            return None

    def view(self, name: str) -> ModuleType:
        """The module as agent code sees it: allowed members only, submodules as views."""
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self._build_view(name)
        return view

    def exposed(self, value: Any, where: str) -> Any:
        """What agent code gets for ``value`` reaching it through ``where`` (an attribute,
        a module member, an element of either): a module as its view, a class the agent
        may not construct as its stand-in, a live object as what its registration offers;
        refused are modules outside the policy, the builtins agent code never gets, the
        host's event loops and futures (see ``machinery``), and metaclasses (they build
        classes around the class checks)."""
        if isinstance(value, ModuleType):
            if self.importable(value.__name__):
                return self.view(value.__name__)
            raise AccessDenied(
                f"{where} is module {value.__name__!r}, which is not available in agent code"
            )
        if id(value) in NEVER:
            raise AccessDenied(f"{where} is a builtin agent code may not use")
        live = self._live_views.get(id(value))
        if live is not None:  # a live object, reached again (a cursor's connection)
            return live[1]
        if isinstance(value, type):
            return self.exposed_class(value, where)
        found = machinery(value)
        if found is not None:
            raise AccessDenied(f"{where} is {found}, which agent code may not use")
        return value

    def exposed_class(self, cls: type, where: str = "the class") -> type:
        if cls in self.real:
            return cls
        if issubclass(cls, type):
            raise AccessDenied(f"{where} is a metaclass, which agent code may not use")
        stand_in = self.stand_ins.get(cls)
        if stand_in is not None:
            return stand_in
        found = machinery(cls)
        if found is not None:  # type(future): its methods, unbound, reach the loop
            raise AccessDenied(f"{where} is {found}, which agent code may not use")
        try:
            mro = cls.__mro__
        except AttributeError:  # pragma: no cover - every type has one
            return cls
        sealed = any(
            k in UNCONSTRUCTABLE
            or ((rule := self.classes.get(k)) is not None and not rule.constructable)
            for k in mro
        )
        if sealed:  # a subclass of a class registered as not constructable
            return self._stand_in(cls, subclassable=False)
        if isinstance(cls, enum.EnumMeta) and not cls.__members__:
            # Calling an enum class without members is enum's functional API: it builds a
            # class from names the caller picks, dunders included.
            return self._stand_in(cls, subclassable=True)
        return cls

    def _stand_in(self, cls: type, subclassable: bool) -> type:
        stand_in = self.stand_ins[cls] = _make_stand_in(cls, subclassable)
        self.real[stand_in] = cls
        return stand_in

    def _build_view(self, name: str) -> ModuleType:
        view = ModuleView(name)
        if self.importable(name):
            real = importlib.import_module(name)
            view.__doc__ = real.__doc__
            stdlib = name not in self.modules
            members = self.modules.get(name) or Members(("*",), ("_*", *SAFE_MODULES[name]))
            for attr in dir(real):
                if not members.allows(attr) or attr.startswith("__"):
                    continue
                try:
                    value = getattr(real, attr)
                except AttributeError:
                    continue
                if stdlib and (name, attr) in REPLACED:
                    value = REPLACED[name, attr]
                    if isinstance(value, PerPolicy):
                        value = value.make(self)
                elif stdlib and isinstance(value, MUTABLE):
                    continue
                else:
                    try:
                        value = self.exposed(value, f"{name}.{attr}")
                    except AccessDenied:
                        continue
                    if isinstance(value, ModuleType) and not isinstance(value, ModuleView):
                        continue
                self.shared.add(id(value))
                setattr(view, attr, value)
        # Registered submodules hang off their parent's view, as after a real import; a
        # package between the two is a view holding just the way down.
        prefix = name + "."
        for sub in {*self.modules, *SAFE_MODULES}:
            if sub.startswith(prefix):
                child = sub[len(prefix) :].split(".", 1)[0]
                setattr(view, child, self.view(prefix + child))
        return view


class ModuleView(ModuleType):
    """A module as agent code sees it. Asking it for a member it does not hold is an
    ImportError, not an AttributeError: ``from M import name`` would otherwise fall back to
    ``sys.modules["M.name"]``, the real module (CPython's rule for circular imports)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what the import machinery asks of any module
            raise AttributeError(name)
        raise ImportDenied(
            f"module {self.__name__!r} has no member {name!r} available to agent code",
            name=self.__name__,
        )

    def __reduce__(self) -> Any:
        raise TypeError(f"the view of module {self.__name__!r} is stored by name only")


def _make_stand_in(cls: type, subclassable: bool) -> type:
    """A stand-in for a class agent code may use but not construct. A class statement may
    derive from it when ``subclassable`` (the class statement's checks still apply); never
    otherwise."""

    class Sealed(type):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise CallDenied(
                f"{cls.__name__} cannot be constructed in agent code"
                + ("" if subclassable else "; use the registered functions that return one")
            )

        def __instancecheck__(self, obj: Any) -> bool:
            return isinstance(obj, cls)

        def __subclasscheck__(self, sub: type) -> bool:
            return issubclass(sub, cls)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):  # __class_getitem__ would give an alias of the class
                raise AttributeError(name)
            return getattr(cls, name)

        def __getitem__(self, args: Any) -> Any:
            return types.GenericAlias(self, args)  # calling it calls the stand-in

    namespace = {
        "__doc__": cls.__doc__,
        "__agex_sealed__": cls,
        "__agex_subclassable__": subclassable,
    }
    stand_in = Sealed(cls.__name__, (), namespace)
    stand_in.__qualname__ = cls.__qualname__
    stand_in.__module__ = cls.__module__
    return stand_in
