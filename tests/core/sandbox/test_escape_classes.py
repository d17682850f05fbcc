"""The classes of escape where the guards meet CPython, each with several variants.

Each attempt, had it worked, would have stored the object it reached in ``reached`` (or
written a file); every test asserts that it did not, and the exact error the model sees.
"""

import dataclasses
import sys
import textwrap
import types

import pytest

from agex import Agent, connect_llm, connect_state
from agex.errors import AccessDenied, CallDenied, CodeRejected, ImportDenied
from agex.sandbox import Policy, Sandbox
from agex.sandbox.policy import ModuleView
from agex.sandbox.signals import OutsideRun
from agex.state.pickling import AgentStateSerializer, loading_into

from . import tools


class Holder:
    """A host object holding what agent code must never get, in attributes and containers."""

    __match_args__ = ("label", "mod")

    def __init__(self) -> None:
        self.label = "holder"
        self.mod = sys
        self.builtin = eval
        self.items = [1, "two", sys]
        self.nested = {"deep": [(1, eval)]}
        self.clean = [1, 2.0, "three", (4, [5])]


@dataclasses.dataclass
class Secretive:
    """A host dataclass whose registration hides a field."""

    public: int = 1
    secret: str = "hunter2"


class SubAccount(tools.Account):
    """An unregistered host subclass of a class registered as not constructable."""


@pytest.fixture
def policy() -> Policy:
    policy = Policy()
    policy.module(tools, exclude=["_*", "delete_everything"])
    policy.cls(tools.Account, exclude=["_*", "close"], constructable=False)
    policy.cls(Secretive, exclude=["_*", "secret"])
    policy.fn(Holder, name="holder")
    policy.fn(lambda: SubAccount("x"), name="sub_account")
    policy.fn(lambda: tools.Account("x"), name="account")
    policy.fn(lambda: Secretive(), name="secretive")
    return policy


def run(policy: Policy, code: str) -> dict:
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(textwrap.dedent(code), namespace)
    assert result.error is None, result.error
    return namespace


# -- 1. class patterns read every attribute through the guards ------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "object(mod=reached)",  # a module in an attribute
        "Holder(mod=reached)",  # the class itself, by keyword
        "Holder(_, reached)",  # positionally, through __match_args__
        "object(builtin=reached)",  # a builtin agent code may not use
        "object(items=[_, _, reached])",  # inside a list the attribute holds
        "[object(mod=reached)]",  # nested in a sequence pattern
        "{'k': object(mod=reached)}",  # nested in a mapping pattern
        "(object(mod=reached) | object(label=reached))",  # in an alternative
    ],
)
def test_class_patterns_cannot_read_what_attributes_cannot(attempt, policy, pattern) -> None:
    policy.fn(Holder, name="Holder")
    subject = {"[": "[h]", "{": "{'k': h}"}.get(pattern[0], "h")
    attempt(
        f"""
        h = holder()
        match {subject}:
            case {pattern}:
                pass
        """,
        expect=AccessDenied,
    )


def test_class_patterns_respect_exclude_lists(attempt) -> None:
    attempt(
        """
        match account():
            case object(close=reached):
                reached()
        """,
        expect=AccessDenied,
    )
    attempt(
        """
        match secretive():
            case Secretive(public=p, secret=reached):
                pass
        """,
        expect=AccessDenied,
    )


def test_class_patterns_cannot_walk_modules(attempt) -> None:
    attempt(
        """
        import TOOLS as tools
        match tools:
            case object(os=reached):
                pass
        """,
        expect=AccessDenied,
    )
    attempt(
        """
        import re
        match re:
            case object(enum=e):
                match e:
                    case object(sys=reached):
                        pass
        """,
        expect=AccessDenied,
    )


def test_class_patterns_on_dunders_are_refused_before_running(attempt) -> None:
    attempt(
        """
        match 1:
            case object(__class__=reached):
                pass
        """,
        expect=CodeRejected,
    )


def test_a_stored_function_with_a_class_pattern_stays_guarded() -> None:
    """The rewritten pattern is what versioned state stores: the next task's call of the
    agent's function still reads through the guards."""
    define = "def peek(o):\n    match o:\n        case object(mod=m):\n            return m\n"
    agent = Agent(
        llm=connect_llm(
            provider="scripted",
            responses=[
                f"```python\n{define}task_success(1)\n```",
                "```python\ntask_success(repr(peek(holder())))\n```",
                "```python\ntask_success(1)\n```",
            ],
        ),
        state=connect_state(type="versioned", storage="memory"),
    )
    agent.fn(Holder, name="holder")

    @agent.task
    def step() -> object:
        """Step."""

    assert step() == 1
    assert step() == 1  # the second reply failed with AccessDenied; the third succeeded


MATCH_PROGRAMS = [
    """
    out = []
    for subject in [0, 1, -1, 2.5, "s", None, True, (1, 2), [1, 2, 3], {"a": 1, "b": 2}, 3j]:
        match subject:
            case 0 | -1:
                out.append("small")
            case True:
                out.append("true")
            case None:
                out.append("none")
            case float(x) if x > 2:
                out.append(("float", x))
            case str() as s:
                out.append(("str", s))
            case (a, b):
                out.append(("pair", a, b))
            case [first, *rest]:
                out.append(("list", first, rest))
            case {"a": a, **others}:
                out.append(("map", a, others))
            case complex(real=r, imag=i):
                out.append(("complex", r, i))
            case _:
                out.append("other")
    """,
    """
    from dataclasses import dataclass
    @dataclass
    class Point:
        x: int
        y: int
    out = []
    for p in [Point(0, 0), Point(1, 0), Point(1, 2), 5]:
        match p:
            case Point(0, 0):
                out.append("origin")
            case Point(x=1, y=0):
                out.append("east")
            case Point(x, y) if x < y:
                out.append(("above", x, y))
            case int(n):
                out.append(("int", n))
    """,
    """
    out = []
    for cmd in ["go north", "look", "drop a b c", "quit now"]:
        match cmd.split():
            case ["go", ("north" | "south") as way]:
                out.append(way)
            case ["look"]:
                out.append("looked")
            case ["drop", *objects]:
                out.append(objects)
            case [verb, *_] if verb == "quit":
                out.append("bye")
    leftover = [name for name in ("way", "objects", "verb") if name in dir()] if False else 0
    """,
]


@pytest.mark.parametrize("program", MATCH_PROGRAMS)
def test_match_statements_behave_as_in_python(program) -> None:
    source = textwrap.dedent(program)
    native: dict = {}
    exec(compile(source, "<native>", "exec"), native)
    ours = run(Policy(), source)
    assert ours["out"] == native["out"]
    assert not [name for name in ours if name.startswith("_agex")]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("match 1:\n    case x:\n        pass\n    case 2:\n        pass", "unreachable"),
        ("match 1:\n    case [a, a]:\n        pass", "multiple assignments"),
        ("match 1:\n    case [a] | (b,):\n        pass", "alternative patterns bind"),
    ],
)
def test_pattern_errors_are_the_compilers(code, message) -> None:
    result = Sandbox().run(code)
    assert isinstance(result.exception, SyntaxError)
    assert message in result.error


def test_pattern_runtime_errors_are_pythons() -> None:
    result = Sandbox().run("match 1:\n    case len():\n        pass")
    assert isinstance(result.exception, TypeError)
    assert "must be a class" in result.error
    result = Sandbox().run("match 1.5:\n    case float(1, 2):\n        pass")
    assert "accepts 1 positional sub-pattern (2 given)" in result.error


# -- 2. no import form yields a real module ----------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "from json import decoder as reached",  # a real submodule, not in the view
        "from re import enum as reached",
        "from TOOLS import os as reached",  # the registered module's own import
        "from TOOLS import sys as reached",
        "import collections.abc as c\nfrom collections import OrderedDict, reached",
    ],
)
def test_from_imports_never_fall_back_to_real_modules(attempt, code) -> None:
    attempt(code, expect=ImportDenied)


def test_dotted_imports_give_views_all_the_way_down() -> None:
    policy = Policy()
    policy.module("xml.etree.ElementTree")
    ns = run(
        policy,
        "import xml.etree.ElementTree as ET\nfrom xml.etree import ElementTree\n"
        "import xml.etree.ElementTree\nroot = ET.fromstring('<a/>').tag",
    )
    assert ns["root"] == "a"
    for name in ("ET", "ElementTree", "xml"):
        assert isinstance(ns[name], ModuleView), name
        assert sys.modules.get(ns[name].__name__) is not ns[name]
    assert isinstance(ns["xml"].etree, ModuleView)


def test_a_view_missing_a_name_says_so_for_getattr_and_hasattr() -> None:
    ns = run(Policy(), "import json\nhas = hasattr(json, 'decoder')\nd = getattr(json, 'x', 7)")
    assert (ns["has"], ns["d"]) == (False, 7)


# -- 3. standard-library helpers that write code from agent strings -----------------------------


def test_a_dataclass_field_name_cannot_be_injected(attempt) -> None:
    attempt(
        """
        import dataclasses
        f = dataclasses.field()
        f.name = "x=__import__('os').system('touch ' + PATH)"
        """,
        expect=AccessDenied,
    )
    attempt(
        """
        import dataclasses
        class F(dataclasses.Field):
            @property
            def name(self):
                return "x=__import__('os').system('touch ' + PATH)"
            @name.setter
            def name(self, value):
                pass
        class C:
            x: int = F(1, None, True, True, None, True, {}, False)
        dataclasses.dataclass(C)
        reached = C
        """,
        expect=CallDenied,
    )


def test_fields_of_a_dataclass_cannot_be_renamed_afterwards(attempt) -> None:
    attempt(
        """
        from dataclasses import dataclass, fields, replace
        @dataclass
        class P:
            x: int = 1
        f = fields(P)[0]
        f.name = "__class__"
        """,
        expect=AccessDenied,
    )


def test_asdict_does_not_open_host_dataclasses(attempt) -> None:
    attempt(
        """
        from dataclasses import dataclass, asdict
        @dataclass
        class Wrapper:
            inner: object
        reached = asdict(Wrapper(secretive()))["inner"]["secret"]
        """,
        expect=AccessDenied,
    )
    attempt("from dataclasses import astuple\nreached = astuple(secretive())", expect=AccessDenied)


def test_asdict_and_astuple_still_work_on_the_agents_dataclasses(policy) -> None:
    ns = run(
        policy,
        """
        from dataclasses import dataclass, asdict, astuple
        @dataclass
        class In:
            v: int
        @dataclass
        class Out:
            name: str
            items: list
            inner: In
        o = Out("a", [In(1), (In(2),)], In(3))
        d, t = asdict(o), astuple(o)
        """,
    )
    assert ns["d"] == {"name": "a", "items": [{"v": 1}, ({"v": 2},)], "inner": {"v": 3}}
    assert ns["t"] == ("a", [(1,), ((2,),)], (3,))


@pytest.mark.parametrize(
    "code",
    [
        'reached = E("X", {"__agex_agent__": True, "__agex_pure__": True})',
        'reached = E("X", [("__del__", lambda self: None)])',
        'reached = E("X", "a b", type=account)',
        "class Base(E):\n    pass\nreached = Base",  # an enum without members
    ],
)
def test_the_enum_functional_api_is_out_of_reach(attempt, code) -> None:
    attempt(
        "import re\nE = [c for c in re.RegexFlag.mro() if c.__name__ == 'Enum'][0]\n" + code,
        expect=CallDenied,
    )


def test_enum_classes_with_members_still_work(policy) -> None:
    ns = run(
        policy,
        """
        import re
        E = [c for c in re.RegexFlag.mro() if c.__name__ == 'Enum'][0]
        class Color(E):
            RED = 1
            GREEN = 2
        names = [c.name for c in Color]
        red = Color(1).name
        """,
    )
    assert (ns["names"], ns["red"]) == (["RED", "GREEN"], "RED")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (
            "from collections import namedtuple\n"
            "reached = namedtuple('P', ['a=__import__(\"os\").system(\"id\")'])",
            ValueError,  # namedtuple checks its names before writing code from them
        ),
        ("from collections import namedtuple\nreached = namedtuple('P) or (1', 'a')", ValueError),
        (
            "import typing\nreached = typing.NamedTuple('P', [('__agex_agent__', int)])",
            ValueError,
        ),
        ("import typing\nreached = typing.ForwardRef('__import__(\"os\")')", AccessDenied),
        (
            "import functools\nc = functools.cached_property(len)\nc.attrname = '__class__'",
            AccessDenied,
        ),
    ],
)
def test_other_code_writing_helpers(attempt, code, error) -> None:
    attempt(code, expect=error)


def test_a_sub_agent_meets_the_same_guards() -> None:
    specialist = Agent(
        name="specialist",
        llm=connect_llm(
            provider="scripted",
            responses=[
                "```python\nmatch holder():\n    case object(mod=m):\n"
                "        task_success(repr(m))\n```",
                "```python\nfrom json import decoder\n```",
                "```python\ntask_success('stopped')\n```",
            ],
        ),
    )
    specialist.fn(Holder, name="holder")
    orchestrator = Agent(
        name="orchestrator",
        llm=connect_llm(provider="scripted", responses=["```python\ntask_success(ask())\n```"]),
    )

    @orchestrator.fn
    @specialist.task
    def ask() -> str:
        """Ask."""

    @orchestrator.task
    def run_it() -> str:
        """Run it."""

    # The first two replies fail (AccessDenied, ImportDenied); had either escaped, the
    # specialist would have finished with what it reached.
    assert run_it() == "stopped"


# -- 4. versioned state stores views and guards by what they stand for ---------------------------


def round_trip(policy: Policy, code: str, load_policy: Policy | None = None) -> tuple[dict, dict]:
    """Run ``code``, store every variable it made, load them into a fresh sandbox."""
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(textwrap.dedent(code).replace("TOOLS", tools.__name__), namespace)
    assert result.error is None, result.error
    serializer = AgentStateSerializer()
    stored, refused = {}, {}
    for name, value in namespace.items():
        if name.startswith("__") or name in policy.names:
            continue
        try:
            stored[name] = serializer.dumps(value)
        except Exception as exc:
            refused[name] = exc
    fresh = Sandbox(load_policy or policy).namespace()
    with loading_into(fresh):
        for name, data in stored.items():
            fresh[name] = serializer.loads(data)
    return fresh, refused


def test_views_come_back_as_views_of_the_loading_policy(policy) -> None:
    fresh, refused = round_trip(
        policy,
        """
        import json
        import TOOLS as tools
        keep = [json, {"t": tools}]
        class Box:
            mod = json
        def uses():
            return json
        """,
    )
    assert not refused
    sandbox_policy = fresh["__builtins__"]["_agex_getattr"].__self__.policy
    assert fresh["json"] is sandbox_policy.view("json")
    assert fresh["keep"][0] is fresh["json"]
    assert fresh["keep"][1]["t"] is sandbox_policy.view(tools.__name__)
    assert fresh["Box"].mod is fresh["json"]
    assert isinstance(fresh["uses"].__closure__ or fresh["json"], types.ModuleType)
    assert not any(sys.modules.get(m.__name__) is m for m in (fresh["json"], fresh["tools"]))


def test_a_view_the_loading_policy_does_not_allow_is_not_loaded(policy) -> None:
    with pytest.raises(Exception, match="no longer available"):
        round_trip(policy, "import TOOLS", load_policy=Policy())


def test_the_sandboxes_own_builtins_come_back_as_the_loading_sandboxes(policy) -> None:
    fresh, refused = round_trip(policy, "g = getattr\nt = type\nh = [hasattr, dir]")
    table = fresh["__builtins__"]
    assert fresh["g"] == table["getattr"]
    assert fresh["g"].__self__ is table["getattr"].__self__
    assert fresh["t"] is table["type"]
    assert fresh["h"][0].__self__ is table["hasattr"].__self__
    assert not refused


def test_stand_ins_come_back_as_stand_ins_and_sandbox_pieces_are_not_stored(policy) -> None:
    fresh, refused = round_trip(policy, "A = Account\nS = type(sub_account())\nf = 'x'.format")
    loading = fresh["__builtins__"]["_agex_getattr"].__self__.policy
    assert fresh["A"] is loading.stand_ins[tools.Account]
    assert fresh["S"] is loading.stand_ins[SubAccount]
    assert set(refused) == {"f"}
    assert "belongs to the sandbox" in str(refused["f"])


def test_real_modules_are_never_stored() -> None:
    with pytest.raises(Exception, match="not agent code's to store"):
        AgentStateSerializer().dumps([sys])


def test_a_stored_view_across_tasks_stays_a_view() -> None:
    agent = Agent(
        llm=connect_llm(
            provider="scripted",
            responses=[
                "```python\nimport json\nm = json\ng = getattr\ntask_success(1)\n```",
                "```python\nfrom m import decoder\n```",  # m is a variable, not a module
                "```python\ntask_success(hasattr(m, 'decoder') or g(m, '__name__'))\n```",
            ],
        ),
        state=connect_state(type="versioned", storage="memory"),
    )

    @agent.task
    def step() -> object:
        """Step."""

    assert step() == 1
    assert step() == "json"


# -- 5. trust that agent code cannot forge; values screened inside containers ------------------


def test_a_truthy_marker_is_not_trust(attempt, policy) -> None:
    forged = type("Forged", (), {"__agex_agent__": True, "__agex_pure__": True})
    policy.fn(lambda: forged(), name="forged")
    attempt("f = forged()\nf._private = 1", expect=AccessDenied)
    attempt("f = forged()\nreached = f._hidden", expect=AccessDenied)


@pytest.mark.parametrize(
    "code",
    [
        "reached = type(sub_account()).mro()[1]('x')",  # the real class, through mro()
        "reached = [c for c in type(account()).mro()][0]('x')",
        "reached = type(sub_account())('x')",  # an unregistered subclass
        "class Mine(type(sub_account())):\n    pass\nreached = Mine('x')",
        "class Mine(Account[int]):\n    pass\nreached = Mine",  # through __class_getitem__
        "reached = Account('x')",
    ],
)
def test_classes_that_cannot_be_constructed_stay_so(attempt, code) -> None:
    attempt(code, expect=(CallDenied, AccessDenied, TypeError))


def test_mro_gives_stand_ins(policy) -> None:
    ns = run(policy, "chain = type(sub_account()).mro()\nbase = Account.mro()")
    assert tools.Account not in ns["chain"]
    assert SubAccount not in ns["chain"]
    assert ns["chain"][0] is policy.stand_ins[SubAccount]


@pytest.mark.parametrize(
    "code",
    [
        "reached = holder().items",
        "reached = holder().nested",
        "reached = getattr(holder(), 'items')",
        "reached = '{0.items}'.format(holder())",
    ],
)
def test_containers_holding_forbidden_values_are_refused(attempt, code) -> None:
    attempt(code, expect=AccessDenied)


def test_containers_of_plain_values_are_handed_over_as_they_are(policy) -> None:
    ns = run(policy, "h = holder()\nc = h.clean\nc.append(6)")
    assert ns["h"].clean[-1] == 6  # the host's own list, not a copy


# -- code that would run after the run, with no time limit --------------------------------------


def test_agent_cleanup_does_not_run_after_its_run() -> None:
    sandbox = Sandbox()
    namespace = sandbox.namespace()
    code = (
        "def forever():\n    try:\n        yield 1\n    finally:\n        while True:\n"
        "            pass\nx = forever()\nnext(x)"
    )
    result = sandbox.run(code, namespace, timeout=5)
    assert result.error is None
    with pytest.raises(OutsideRun):
        namespace["x"].close()  # the host closing it, as the garbage collector would


def test_agent_classes_cannot_define_finalizers(attempt) -> None:
    attempt("class C:\n    def __del__(self):\n        pass", expect=CodeRejected)


# -- found by a fresh attack --------------------------------------------------------------------


def test_a_field_subclass_cannot_reach_dataclass_through_a_base(attempt) -> None:
    attempt(
        """
        import dataclasses
        class F(dataclasses.Field):
            pass
        """,
        expect=CallDenied,
    )


def test_update_wrapper_copies_no_host_members(attempt, policy) -> None:
    attempt(
        """
        import functools
        class Box:
            pass
        b = functools.update_wrapper(Box(), account())
        reached = b.owner
        """,
        expect=AttributeError,
    )
    attempt(
        """
        import functools
        def f():
            pass
        functools.update_wrapper(f, holder())
        reached = f.mod
        """,
        expect=AttributeError,
    )
    ns = run(
        policy,
        """
        import functools
        def inner():
            "Inner's doc."
        @functools.wraps(inner)
        def outer():
            return inner()
        @functools.wraps(len)
        def size(x):
            return len(x)
        """,
    )
    assert (ns["outer"].__name__, ns["outer"].__doc__) == ("inner", "Inner's doc.")
    assert ns["size"].__name__ == "len"


# -- found by a second fresh attack ---------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "payload = 'open(' + repr(PATH) + ', \"w\")'\nclass Report:\n    title: payload",
        "import typing\npayload = 'open(' + repr(PATH) + ', \"w\")'\nclass Report:\n"
        "    items: typing.List[payload]",
        "payload = 'open(' + repr(PATH) + ', \"w\")'\ndef handler(x: payload) -> None:\n    pass",
        "payload = 'open(' + repr(PATH) + ', \"w\")'\ndef handler(x) -> list[payload]:\n    pass",
        "import typing\npayload = 'open(' + repr(PATH) + ', \"w\")'\n"
        "def handler(x: typing.Optional[typing.Dict[str, payload]]):\n    pass",
        "class Report:\n    title: 'int'",  # a literal string too: annotations are types
    ],
)
def test_annotations_hold_nothing_that_type_hints_would_run(attempt, code) -> None:
    """Host code resolving the agent's type hints (pydantic, typing.get_type_hints) would
    evaluate a string annotation as code, unrewritten, with the real builtins."""
    attempt(code, expect=CallDenied)


def test_annotations_that_are_types_still_work(policy) -> None:
    import typing

    ns = run(
        policy,
        """
        import typing
        from dataclasses import dataclass
        @dataclass
        class Row:
            name: str
            tags: list[str]
            kind: typing.Literal["a", "b"] = "a"
            note: typing.Annotated[int, "metadata may be text"] = 0
            maybe: typing.Optional[typing.Dict[str, int]] = None
        def f(x: int, *rest: str, key: typing.Callable[[int], str] = str) -> dict[str, int]:
            return {}
        row = Row("n", ["t"])
        """,
    )
    assert typing.get_type_hints(ns["Row"], include_extras=True)["kind"] == typing.Literal["a", "b"]
    assert typing.get_type_hints(ns["f"])["return"] == dict[str, int]


def test_a_stand_in_subscripted_is_still_not_constructable(attempt, policy) -> None:
    import typing

    T = typing.TypeVar("T")

    class Secret(typing.Generic[T]):
        def __init__(self, value):
            self.value = value

    class Mapping(dict):
        pass

    policy.cls(Secret, constructable=False)
    policy.cls(Mapping, constructable=False)
    attempt("reached = Secret[int](5)", expect=CallDenied)
    attempt("reached = Mapping[int](a=1)", expect=CallDenied)


def test_no_class_derives_from_a_stand_in_through_mro_entries(attempt, policy) -> None:
    class Plain:
        _token = "PRIVATE"

        @classmethod
        def make_hidden(cls):
            return cls()

    policy.cls(Plain, exclude=["_*", "make_hidden"], constructable=False)
    attempt(
        "import typing\nclass Sub(typing.GenericAlias(Plain, ())):\n    pass\nreached = Sub._token",
        expect=CallDenied,
    )
    attempt(
        "class Sub(Plain[int]):\n    pass\nreached = Sub.make_hidden()",
        expect=(CallDenied, TypeError),
    )


def test_agent_code_makes_no_aliases_that_write_onto_host_objects(attempt, policy) -> None:
    config = type("Config", (), {})()
    policy.fn(lambda: config, name="get_config")
    attempt("import typing\nreached = typing.GenericAlias(get_config, ())()", expect=CallDenied)
    attempt("reached = type(list[int])(get_config, ())()", expect=CallDenied)
    attempt("import typing\nreached = type(typing.List[int])(get_config, ())()", expect=CallDenied)
    assert vars(config) == {}


# -- found by a third fresh attack ----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # an alias inside Literal[...] is resolved too
        "import typing\nA = typing.List['open(' + repr(PATH) + ', \"w\")']\n"
        "class C:\n    x: typing.Literal[A]",
        "import typing\nB = list['open(' + repr(PATH) + ', \"w\")']\n"
        "def f(x: typing.Literal[1, B]):\n    pass",
        # the functional forms take field types as arguments, not annotations
        "import typing\nNT = typing.NamedTuple('NT', [('a', 'open(' + repr(PATH) + ', \"w\")')])",
        "import typing\nNT = typing.NamedTuple('NT', a=typing.List['x'])",
        "import typing\nTD = typing.TypedDict('TD', {'a': 'open(' + repr(PATH) + ', \"w\")'})",
    ],
)
def test_no_route_puts_a_string_where_type_hints_resolve(attempt, code) -> None:
    attempt(code, expect=CallDenied)


def test_namedtuple_and_typeddict_still_work(policy) -> None:
    ns = run(
        policy,
        """
        import typing
        P = typing.NamedTuple("P", [("a", int), ("b", str)])
        class Q(typing.NamedTuple):
            x: int
            y: str = "d"
        TD = typing.TypedDict("TD", {"a": int}, total=False)
        class TD2(typing.TypedDict):
            b: typing.Literal["x", "y"]
        values = (P(1, "x"), Q(2), TD(a=1), TD2(b="x"))
        """,
    )
    assert ns["values"] == ((1, "x"), (2, "d"), {"a": 1}, {"b": "x"})


@pytest.mark.parametrize("base", ["collections.abc.Mapping", "collections.abc.Sized"])
def test_registering_on_an_agent_abc_cannot_reach_a_host_abc(attempt, base) -> None:
    import collections.abc

    attempt(
        f"import collections.abc\nclass M({base}):\n    pass\nM.register(str)",
        expect=AccessDenied,
    )
    assert not isinstance("x", collections.abc.Mapping)


def test_get_args_hands_out_stand_ins(attempt, policy) -> None:
    import typing

    policy.fn(lambda: typing.List[tools.Account | None], name="alias")  # noqa: UP006
    attempt(
        "import typing\nu = typing.get_args(alias())[0]\nreached = typing.get_args(u)[0]('x')",
        expect=CallDenied,
    )
    ns = run(policy, "import typing\nargs = typing.get_args(typing.get_args(alias())[0])")
    assert ns["args"] == (policy.stand_ins[tools.Account], type(None))


# -- found by a fourth fresh attack ---------------------------------------------------------------


def _scripted(*codes: str):
    return connect_llm(provider="scripted", responses=[f"```python\n{c}\n```" for c in codes])


def test_agent_code_does_not_cross_to_a_sub_agent(tmp_path) -> None:
    """A parent's object handed to a specialist would run the parent's code in the event
    loop (its __repr__ for the specialist's prompt) or, once in the specialist's versioned
    state, with the specialist's registrations."""
    marker = tmp_path / "ran"
    specialist = Agent(
        name="specialist",
        llm=_scripted("task_success(len(items))"),
        state=connect_state(type="versioned", storage="memory"),
    )
    specialist.fn(lambda: marker.write_text("x"), name="admin_delete")
    parent = Agent(
        name="parent",
        llm=_scripted(
            "class H:\n    def __hash__(self):\n        return 1\n"
            "    def __repr__(self):\n        while True:\n            pass\n"
            "task_success(count([{H()}]))",
            "from collections import defaultdict\ndef f():\n    return 1\n"
            "task_success(count([defaultdict(f)]))",
            "task_success(count([1, 2]) + 40)",
        ),
        timeout=30,
    )

    @parent.fn
    @specialist.task
    def count(items: list) -> int:
        """Count."""

    @parent.task
    def go() -> int:
        """Go."""

    errors: list[str] = []
    assert go(on_event=lambda e: errors.append(getattr(e, "error", None) or "")) == 42
    assert sum("carries code an agent wrote" in e for e in errors) == 2
    assert not marker.exists()


def test_a_bare_container_annotation_gets_the_exact_builtin() -> None:
    agent = Agent(
        llm=_scripted(
            "from collections import defaultdict\ndef f():\n    return 1\n"
            "d = defaultdict(f)\nd['a'] = 2\ntask_success(d)"
        )
    )

    @agent.task
    def make() -> dict:
        """Make."""

    made = make()
    assert type(made) is dict
    assert made == {"a": 2}


def test_attribute_errors_do_not_hand_out_their_object(attempt, policy) -> None:
    class Service:
        def __init__(self):
            self._conn = object()

        def query(self):
            return self._conn.missing  # raises AttributeError with obj=self._conn

    policy.fn(Service, name="service")
    attempt(
        "try:\n    service().query()\nexcept AttributeError as e:\n    reached = e.obj",
        expect=AccessDenied,
    )


# -- found by a fifth attack ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import typing\nv = typing.NamedTuple('V', total='open(' + repr(PATH) + ', \"w\")')",
        "import typing\nclass D(dict):\n    def items(self):\n        return [('a', int)]\n"
        "v = typing.TypedDict('V', D(a='open(' + repr(PATH) + ', \"w\")'))",
    ],
)
def test_field_types_are_checked_on_the_copy_typing_gets(attempt, code) -> None:
    attempt(code, expect=CallDenied)


def test_fields_that_change_when_read_again_are_read_once(policy) -> None:
    ns = run(
        policy,
        "import typing\nclass L(list):\n    n = [0]\n    def __iter__(self):\n"
        "        self.n[0] += 1\n"
        "        return iter([('a', int)] if self.n[0] == 1 else [('a', 'payload')])\n"
        "V = typing.NamedTuple('V', L())",
    )
    assert ns["V"].__annotations__ == {"a": int}


def test_functional_namedtuples_keep_their_fields_and_module(policy) -> None:
    ns = run(
        policy,
        "import typing\nV = typing.NamedTuple('V', (f for f in [('a', int)]))\n"
        "T = typing.TypedDict('T', {'b': int}, total=False)",
    )
    assert ns["V"]._fields == ("a",)
    assert ns["V"].__module__ == ns["T"].__module__ == "__agent__"


@pytest.mark.parametrize(
    "value",
    [
        "[f].copy",  # a bound builtin method of a list holding the function
        "{'k': f}.get",
        "namedtuple('X', 'a', defaults=(f,))",  # a class made at run time, holding it
        "functools.partial(f)",
        "defaultdict(f)",
    ],
)
def test_agent_code_is_found_wherever_a_value_holds_it(value) -> None:
    from agex.sandbox.ownership import agent_code_in

    ns = run(
        Policy(),
        "import functools\nfrom collections import namedtuple, defaultdict\n"
        f"def f():\n    pass\nvalue = {value}\nplain = [1, 'a', (2.0, None), {{'k': [b'x']}}]",
    )
    assert agent_code_in(ns["value"]) is ns["f"]
    assert agent_code_in(ns["plain"]) is None


def test_a_builtin_classmethod_of_a_sealed_class_is_refused_plainly(attempt, policy) -> None:
    """``dict.fromkeys`` of a sealed dict subclass would build one; it once recursed until
    a RecursionError instead of saying so."""

    class Table(dict):
        pass

    policy.cls(Table, constructable=False)
    result = attempt("reached = Table.fromkeys([1])", expect=AccessDenied)
    assert "may not construct" in result.error
