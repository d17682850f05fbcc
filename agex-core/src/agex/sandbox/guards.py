"""The checks agent code pays for at run time.

Arithmetic, loops, calls, subscripts and comprehensions run as plain bytecode. What is
checked: attribute access (a set lookup for the builtin types and the agent's own classes,
the full policy for everything else), ``getattr``/``setattr``/``hasattr``/``dir`` with names
computed at run time, imports, class creation, ``type`` and ``str.format``.
"""

from __future__ import annotations

import _string
import builtins
import enum
import itertools
import operator
import string
import sys
import typing
from abc import ABCMeta
from collections.abc import Callable
from types import (
    AsyncGeneratorType,
    BuiltinFunctionType,
    BuiltinMethodType,
    CoroutineType,
    FunctionType,
    GeneratorType,
    GenericAlias,
    MethodType,
    ModuleType,
)
from typing import Any

from agex.errors import AccessDenied, CallDenied, ImportDenied
from agex.sandbox import nesting
from agex.sandbox.annotations import checked_annotation
from agex.sandbox.machinery import machinery
from agex.sandbox.ownership import (
    AGENT,
    AGENT_FILENAME,
    PURE,
    agent_class,
    agent_function,
    agent_owned,
)
from agex.sandbox.patterns import Matcher
from agex.sandbox.policy import SAFE_BUILTINS, Policy
from agex.sandbox.signals import (
    current_run,
    exits_cannot_swallow_signals,
    raise_pending,
    reraise_signals,
)
from agex.sandbox.stdlib import SEALED

#: Instances of these never hide anything behind a public attribute name.
FAST_TYPES = frozenset(
    {int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set, frozenset}
    | {range, slice, type(None)}
)
#: Values that hold nothing else: screening stops at them.
SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})
#: Containers whose items are screened like the attribute that holds them.
CONTAINERS = (list, tuple, dict, set, frozenset)
#: How deep screening looks into containers held by an attribute.
MAX_CONTAINER_DEPTH = 20
#: Public names that lead into the interpreter's frames and code objects.
FRAME_NAMES = frozenset(
    [
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "tb_frame",
        "tb_next",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
    ]
)
#: Methods that resume a generator or coroutine with a value or exception of the caller's:
#: agent code drives only its own (a host coroutine driven by hand yields the future it
#: waits on, and with it the event loop).
DRIVING_NAMES = frozenset({"send", "throw", "asend", "athrow"})
_SUSPENDED = (GeneratorType, CoroutineType, AsyncGeneratorType)
#: Dunder attributes agent code may read: plain strings.
READABLE_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__"})
#: Attribute names whose value for strings is replaced by a checked version.
FORMAT_NAMES = frozenset({"format", "format_map"})
#: The underscore names that are namedtuple's public API.
NAMEDTUPLE_API = frozenset({"_asdict", "_replace", "_fields", "_field_defaults", "_make"})
_STR_FORMAT, _STR_FORMAT_MAP = str.format, str.format_map
#: The base of typing's constructs; its generic aliases forward writes to their origin.
_TypingConstruct = type(typing.Callable[[], None]).__mro__[-2]
#: Builtin classes an agent class may derive from and still count as the agent's own.
SAFE_BASES = frozenset(
    {object}
    | FAST_TYPES
    | {v for v in vars(builtins).values() if isinstance(v, type) and issubclass(v, BaseException)}
)

_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.iadd,
    "Sub": operator.isub,
    "Mult": operator.imul,
    "MatMult": operator.imatmul,
    "Div": operator.itruediv,
    "FloorDiv": operator.ifloordiv,
    "Mod": operator.imod,
    "Pow": operator.ipow,
    "LShift": operator.ilshift,
    "RShift": operator.irshift,
    "BitAnd": operator.iand,
    "BitOr": operator.ior,
    "BitXor": operator.ixor,
}
_MISSING = object()


def plain_name(name: object) -> str:
    """An attribute name as a plain ``str``: a subclass could lie to ``startswith``."""
    if not isinstance(name, str):
        raise TypeError(f"attribute name must be a string, not {type(name).__name__}")
    return name if type(name) is str else str.__str__(name)


def forbidden_attribute(name: str) -> str | None:
    """Why agent code may never touch attribute ``name`` on anything, or None."""
    if name in FRAME_NAMES:
        return f"attribute {name!r} leads into interpreter internals and is not accessible"
    if name.startswith("__") and name.endswith("__") and name not in READABLE_DUNDERS:
        return f"dunder attribute {name!r} is not accessible in agent code"
    return None


def _abc_of_the_host(cls: type) -> bool:
    """An ABC whose registrations reach a host ABC: the host's own, or an agent class
    deriving from one (an ABC's subclass check asks its subclasses' registries too)."""
    return any(isinstance(k, ABCMeta) and not agent_class(k) for k in cls.__mro__)


def _agent_made(suspended: Any) -> bool:
    """A generator, coroutine or async generator whose code is the agent's."""
    code = getattr(suspended, "gi_code", None) or getattr(suspended, "cr_code", None)
    code = code or getattr(suspended, "ag_code", None)
    return getattr(code, "co_filename", None) == AGENT_FILENAME


def _namedtuple(obj: Any) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return issubclass(cls, tuple) and isinstance(cls.__dict__.get("_fields"), tuple)


def _kind(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return f"module {obj.__name__!r}"
    if isinstance(obj, type):
        return f"class {obj.__name__}"
    return f"{type(obj).__name__} object"


class Guards:
    """The run-time checks for one policy, and the builtins agent code sees."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.formatter = _CheckedFormatter(self.get)
        self.attribute, self.store = self._make_fast()

    # -- attribute access ------------------------------------------------------------

    def _make_fast(self) -> tuple[Callable[[Any, str], Any], Callable[[Any, Any, str], None]]:
        """Reads and writes of ``obj.name`` for a name checked when the code was compiled.

        Builtin values (public names) and instances of the agent's own classes need nothing
        more; everything else takes the full check.
        """
        fast_types, get, slow_get, pure = FAST_TYPES, getattr, self.get, PURE
        put, slow_set = setattr, self.set

        def attribute(obj: Any, name: str) -> Any:
            cls = type(obj)
            if cls in fast_types:
                if name[0] != "_":
                    return get(obj, name)
            elif cls.__dict__.get("__agex_pure__") is pure:
                return get(obj, name)
            return slow_get(obj, name)

        def store(value: Any, obj: Any, name: str) -> None:
            if type(obj).__dict__.get("__agex_pure__") is pure:
                put(obj, name, value)
            else:
                slow_set(obj, name, value)

        return attribute, store

    def get(self, obj: Any, name: str) -> Any:
        """Any attribute read, checked against everything the policy says."""
        name = plain_name(name)
        problem = forbidden_attribute(name)
        if problem:
            raise AccessDenied(f"{problem} ({_kind(obj)})")
        if name in READABLE_DUNDERS:
            value = getattr(obj, name)
            if value is None or isinstance(value, str):
                return value
            raise AccessDenied(f"{name} of {_kind(obj)} is not a string and is not accessible")
        if (
            name.startswith("_")
            and not self._owned_by_agent(obj, name)
            and not (name in NAMEDTUPLE_API and _namedtuple(obj))
        ):
            raise AccessDenied(f"private attribute {name!r} of {_kind(obj)} is not accessible")
        if name == "obj" and isinstance(obj, AttributeError):
            raise AccessDenied(
                "AttributeError.obj is the object a failed lookup was made on, which may be "
                "the host's internals; it is not accessible"
            )
        if name in FORMAT_NAMES and (obj is str or isinstance(obj, str)):
            return self._checked_format(obj, name)
        if isinstance(obj, ModuleType):
            return self._module_member(obj, name)
        found = machinery(obj)
        if found is not None:
            raise AccessDenied(f"{_kind(obj)} is {found}: agent code may not use its {name!r}")
        if name in DRIVING_NAMES and isinstance(obj, _SUSPENDED) and not _agent_made(obj):
            raise AccessDenied(
                f"{_kind(obj)}.{name} would resume code agent code did not write; iterate it "
                "(for, next) instead"
            )
        self._check_rule(obj, name)
        if name == "register" and isinstance(obj, ABCMeta) and _abc_of_the_host(obj):
            raise AccessDenied(
                f"{obj.__name__}.register would change every isinstance check in the process"
            )
        return self.screen(getattr(obj, name), obj, name)

    def _check_rule(self, obj: Any, name: str) -> None:
        """The registration's member patterns, also through ``super()``."""
        owner = obj
        if isinstance(obj, super):
            owner = getattr(obj, "__self_class__", None)
        elif isinstance(obj, GenericAlias | _TypingConstruct):  # reads reach the origin
            owner = getattr(obj, "__origin__", None)
        rule = self.policy.class_rule(owner) if owner is not None else None
        if rule is not None and not rule.allows(name):
            raise AccessDenied(f"{rule.cls.__name__}.{name} is not exposed to agent code")

    def screen(self, value: Any, owner: Any, name: str) -> Any:
        """Keep what must never reach agent code from leaving through an attribute, also
        inside the lists, tuples, dicts and sets the attribute holds."""
        kind = type(value)
        if kind in SCALARS:
            return value
        if value is _STR_FORMAT or value is _STR_FORMAT_MAP:
            return self._checked_format(str, value.__name__)
        if kind is BuiltinMethodType:
            bound = value.__self__
            if isinstance(bound, str) and value.__name__ in FORMAT_NAMES:
                return self._checked_format(bound, value.__name__)  # str.format of a str
            if isinstance(bound, type) and value.__name__ == "mro":
                return self._mro(bound)
            stand_in = self.policy.stand_ins.get(bound) if isinstance(bound, type) else None
            if stand_in in self.policy.real:  # dict.fromkeys of a class it may not construct
                raise AccessDenied(
                    f"{_kind(owner)}.{name} would construct {bound.__name__}, which agent "
                    "code may not construct"
                )
            if stand_in is not None:  # a classmethod of a class agent code sees replaced
                return self.get(stand_in, value.__name__)
        where = f"{_kind(owner)}.{name}"
        if isinstance(value, CONTAINERS):
            self._check_contents(value, where, 0)
            return value
        return self.policy.exposed(value, where)

    def _mro(self, cls: type) -> Callable[[], list[type]]:
        """``C.mro()``, each class in it as agent code may see it."""
        exposed = self.policy.exposed_class
        return lambda: [exposed(k) for k in cls.mro()]

    def _check_contents(self, value: Any, where: str, depth: int) -> None:
        """Refuse a container holding anything agent code would not get by itself (a
        module, a builtin it may not use, a class it may not construct): the container is
        the host's, so it is not copied with the item replaced."""
        if depth > MAX_CONTAINER_DEPTH:
            raise AccessDenied(f"{where} is nested too deeply to check; read it in parts")
        items = [*dict.keys(value), *dict.values(value)] if isinstance(value, dict) else value
        if set(map(type, items)) <= SCALARS:
            return
        for item in items:
            if type(item) in SCALARS:
                continue
            if isinstance(item, CONTAINERS):
                self._check_contents(item, where, depth + 1)
            elif self.policy.exposed(item, f"an item of {where}") is not item:
                raise AccessDenied(
                    f"{where} holds {_kind(item)}, which agent code may not use as it is"
                )

    def _module_member(self, module: ModuleType, name: str) -> Any:
        view = (
            self.policy.view(module.__name__) if self.policy.importable(module.__name__) else None
        )
        if view is None:
            raise AccessDenied(f"{_kind(module)} is not available in agent code")
        try:
            return view.__dict__[name]
        except KeyError:
            raise AccessDenied(
                f"module {module.__name__!r} has no attribute {name!r} available to agent code"
            ) from None

    def _owned_by_agent(self, obj: Any, name: str) -> bool:
        """Private names are the agent's own business on the agent's own objects only."""
        cls = obj if isinstance(obj, type) else type(obj)
        if not agent_class(cls):
            return False
        for klass in cls.__mro__:
            if name in klass.__dict__:
                return agent_class(klass)
        return True

    def set(self, obj: Any, name: str, value: Any) -> None:
        name = plain_name(name)
        self._check_write(obj, name, "set")
        setattr(obj, name, value)

    def delete(self, obj: Any, name: str) -> None:
        name = plain_name(name)
        self._check_write(obj, name, "delete")
        delattr(obj, name)

    def augment(self, obj: Any, name: str, op: str, value: Any) -> None:
        self.set(obj, name, _INPLACE[op](self.get(obj, name), value))

    def _check_write(self, obj: Any, name: str, verb: str) -> None:
        if (name.startswith("__") and name.endswith("__")) or name in FRAME_NAMES:
            raise AccessDenied(f"agent code cannot {verb} attribute {name!r}")
        if isinstance(obj, ModuleType):
            raise AccessDenied(f"agent code cannot {verb} attributes of {_kind(obj)}")
        if isinstance(obj, type) and not agent_class(obj):
            raise AccessDenied(f"agent code cannot {verb} attributes of {_kind(obj)}")
        if isinstance(obj, GenericAlias | _TypingConstruct):  # writes land on the origin class
            raise AccessDenied(f"agent code cannot {verb} attributes of the type alias {obj}")
        if id(obj) in self.policy.shared or isinstance(obj, enum.Enum):
            raise AccessDenied(
                f"agent code cannot {verb} attributes of {_kind(obj)}: the whole process shares it"
            )
        if isinstance(obj, FunctionType | BuiltinFunctionType | MethodType) and not (
            agent_function(obj)
        ):
            raise AccessDenied(f"agent code cannot {verb} attributes of host functions")
        if name.startswith("_") and not self._owned_by_agent(obj, name):
            raise AccessDenied(f"private attribute {name!r} of {_kind(obj)} is not accessible")
        if not (agent_owned(obj) or self._registered_instance(obj)):
            # The standard library trusts its own objects (a dataclass Field's name becomes
            # generated source), and host code trusts what it made.
            raise AccessDenied(
                f"agent code cannot {verb} attributes of {_kind(obj)}: only of objects of its "
                "own classes and of the classes and modules registered with the agent"
            )
        self._check_rule(obj, name)

    def _registered_instance(self, obj: Any) -> bool:
        """An instance of a class registered with ``cls()``, or defined in a module
        registered with ``module()``."""
        cls = type(obj)
        if self.policy.class_rule(cls) is not None:
            return True
        module = getattr(cls, "__module__", None)
        return isinstance(module, str) and any(
            module == m or module.startswith(m + ".") for m in self.policy.modules
        )

    def _checked_format(self, obj: Any, name: str) -> Callable[..., str]:
        formatter = self.formatter

        def vformat(template: str, args: Any, kwargs: Any) -> str:
            return formatter.vformat(_numbered(template), args, kwargs)

        if obj is str:  # str.format(template, ...)
            if name == "format":
                return lambda template, /, *args, **kwargs: vformat(template, args, kwargs)
            return lambda template, mapping, /: vformat(template, (), mapping)
        if name == "format":
            return lambda *args, **kwargs: vformat(obj, args, kwargs)
        return lambda mapping, /: vformat(obj, (), mapping)

    # -- builtins ----------------------------------------------------------------------

    def builtins(self) -> dict[str, Any]:
        """Everything agent code can name without defining or importing it."""
        table: dict[str, Any] = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
        table.update(nesting.BUILTINS)  # lazy iterators that count how deep they nest
        table.update(
            getattr=self._getattr,
            setattr=self._setattr,
            delattr=self._delattr,
            hasattr=self._hasattr,
            dir=self._dir,
            type=_sandbox_type(self.policy.exposed_class),
            format=_format,
            print=_print,
            __import__=self._import,
            __build_class__=self.build_class,
            # Called by rewritten code only; agent code cannot name anything "_agex_...".
            _agex_attr=self.attribute,
            _agex_getattr=self.get,
            _agex_store=self.store,
            _agex_delattr=self.delete,
            _agex_augattr=self.augment,
            _agex_reraise=reraise_signals,
            _agex_pending=raise_pending,
            _agex_ok=True,
            _agex_with=exits_cannot_swallow_signals,
            _agex_match=Matcher(self.get),
            _agex_separated=nesting.separated,
            _agex_annotation=checked_annotation,
        )
        return table

    def _sealed(self, cls: type) -> bool:
        """Agent code may not derive from ``cls``: it sees only a stand-in for it."""
        stand_in = cls if cls in self.policy.real else self.policy.exposed_class(cls)
        return stand_in in self.policy.real and (
            stand_in.__dict__.get("__agex_subclassable__") is not True
        )

    def build_class(self, func: Any, name: str, *bases: Any, **keywords: Any) -> type:
        """A class statement: no keywords, no metaclass, no base agent code may not
        construct; the class is marked as the agent's."""
        if keywords:
            raise CallDenied(
                f"class {name}: keywords such as metaclass= are not available in agent code"
            )
        real_bases = []
        for base in bases:
            if isinstance(base, type):
                if issubclass(base, type) or _SandboxType in base.__mro__:
                    raise CallDenied(f"class {name}: classes cannot derive from type in agent code")
                real = self.policy.real.get(base)
                if real is not None and base.__dict__.get("__agex_subclassable__") is True:
                    base = real
                elif real is not None or self._sealed(base):
                    raise CallDenied(
                        f"class {name}: {base.__name__} cannot be constructed in agent code, "
                        "so it cannot be subclassed either"
                    )
            real_bases.append(base)
        cls: type = _real_build_class(func, name, *real_bases)
        # Bases come in through __mro_entries__ too (``typing.GenericAlias(C, ())``): the
        # class's whole MRO is checked, stand-ins in it included.
        refused = [
            k for k in cls.__mro__[1:] if k in SEALED or k in self.policy.real or self._sealed(k)
        ]
        if refused:
            raise CallDenied(f"class {name}: agent code may not derive from {refused[0].__name__}")
        if isinstance(cls, enum.EnumMeta) and not cls.__members__:
            raise CallDenied(
                f"class {name}: an enum class in agent code must define its members; calling "
                "one without members would build classes from names"
            )
        pure = all(
            k.__dict__.get("__agex_pure__") is PURE or k in SAFE_BASES for k in cls.__mro__[1:]
        )
        type.__setattr__(cls, "__agex_agent__", AGENT)
        if pure:
            type.__setattr__(cls, "__agex_pure__", PURE)
        return cls

    def _getattr(self, obj: Any, name: str, default: Any = _MISSING, /) -> Any:
        try:
            return self.get(obj, name)
        except AttributeError:
            if default is _MISSING:
                raise
            return default

    def _setattr(self, obj: Any, name: str, value: Any, /) -> None:
        self.set(obj, name, value)

    def _delattr(self, obj: Any, name: str, /) -> None:
        self.delete(obj, name)

    def _hasattr(self, obj: Any, name: str, /) -> bool:
        try:
            self._getattr(obj, name)
        except AttributeError:
            return False
        return True

    def _dir(self, obj: Any = _MISSING, /) -> list[str]:
        if obj is _MISSING:
            raise TypeError("dir() needs an object in agent code")
        names = []
        for name in dir(obj):
            if name.startswith("__"):
                continue
            try:
                self.get(obj, name)
            except Exception:
                continue
            names.append(name)
        return names

    def _import(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> ModuleType:
        if level:
            raise ImportDenied("relative imports are not available in agent code")
        within = bool(fromlist) and all(
            isinstance(f, str) and self.policy.importable(f"{name}.{f}") for f in fromlist
        )  # from P import M, with P.M registered and P not
        if not (self.policy.importable(name) or within):
            available = ", ".join(self.policy.importable_names())
            raise ImportDenied(
                f"module {name!r} is not available in agent code. Available: {available}",
                name=name,
            )
        if fromlist:
            return self.policy.view(name)
        return self.policy.view(name.partition(".")[0])


class _TypeMeta(type):
    """Makes ``isinstance(C, type)`` and ``issubclass(M, type)`` work with the stand-in."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, type)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, type)


class _SandboxType(metaclass=_TypeMeta):
    """Base of every policy's ``type``; agent classes may never derive from it."""


def is_sandbox_type(obj: Any) -> bool:
    """``obj`` is some sandbox's stand-in for ``type``."""
    return isinstance(obj, type) and _SandboxType in obj.__mro__ and obj is not _SandboxType


def _sandbox_type(exposed: Callable[[type], type]) -> type:
    """``type`` in agent code: ``type(x)`` works (giving a registered class's stand-in where
    it has one), ``isinstance(C, type)`` works, and creating classes from a name, bases and a
    dict does not, since that would skip the class checks."""

    class Meta(_TypeMeta):
        def __call__(cls, *args: Any) -> Any:
            if len(args) != 1:
                raise CallDenied(
                    "type() with three arguments is not available in agent code; use a class "
                    "statement"
                )
            found = type(args[0])
            return cls if issubclass(found, type) else exposed(found)

    return Meta("type", (_SandboxType,), {"__doc__": _sandbox_type.__doc__})


def _format(value: Any, spec: str = "", /) -> str:
    if not isinstance(spec, str):
        raise TypeError(f"format spec must be a string, not {type(spec).__name__}")
    return format(value, spec)


def _print(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    if file is not None:
        raise CallDenied(
            "print(file=...) is not available in agent code; printed text is "
            "captured and shown to you"
        )
    sep = " " if sep is None else _plain_text("sep", sep)
    end = "\n" if end is None else _plain_text("end", end)
    run = current_run()
    text = str.join(sep, map(str, args)) + end
    if run is None:
        sys.stdout.write(text)
    else:
        run.output.write(text)


def _plain_text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be None or a string, not {type(value).__name__}")
    return str.__str__(value)


_real_build_class = builtins.__build_class__


def _numbered(template: str) -> str:
    """``template`` with every automatically numbered field (``{}``, ``{.real}``, ``{[0]}``,
    nested ones in format specs included) given its number, in ``str.format``'s order:
    string.Formatter numbers only fields that are entirely empty."""
    if not isinstance(template, str):
        raise TypeError(f"format template must be a string, not {type(template).__name__}")
    counter = itertools.count()
    seen = {"auto": False, "manual": False}

    def walk(text: str) -> str:
        out = []
        for literal, field, spec, conversion in _string.formatter_parser(text):
            out.append(literal.replace("{", "{{").replace("}", "}}"))
            if field is None:
                continue
            first = field.split(".", 1)[0].split("[", 1)[0]
            if not first:
                field = f"{next(counter)}{field}"
                seen["auto"] = True
            elif first.isdigit():
                seen["manual"] = True
            if seen["auto"] and seen["manual"]:
                raise ValueError(
                    "cannot switch from manual field specification to automatic field numbering"
                )
            out.append(
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{walk(spec)}" if spec else "")
                + "}"
            )
        return "".join(out)

    return walk(template)


class _CheckedFormatter(string.Formatter):
    """``str.format`` whose ``{0.attr}`` and ``{0[key]}`` fields go through the guards."""

    def __init__(self, get: Callable[[Any, str], Any]) -> None:
        self._get = get

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attribute, key in rest:
            obj = self._get(obj, key) if is_attribute else obj[key]
        return obj, first
