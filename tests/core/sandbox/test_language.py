"""Agent code is ordinary Python: everything here must keep working under the rewriter."""

import textwrap

import pytest

from agex.sandbox import Sandbox


def code(text: str) -> str:
    return textwrap.dedent(text)


def test_functions_lambdas_closures_and_generators(run) -> None:
    ns = run(
        code("""
        def counter():
            count = 0
            def bump(step=1):
                nonlocal count
                count += step
                return count
            return bump
        bump = counter()
        bump(); bump(5)
        square = lambda x: x * x
        def evens(n):
            for i in range(n):
                if i % 2 == 0:
                    yield i
        gen_total = sum(evens(10))
        def delegating():
            yield from evens(5)
        result = (bump(), square(7), gen_total, list(delegating()))
    """)
    )
    assert ns["result"] == (7, 49, 20, [0, 2, 4])


def test_globals_and_unpacking(run) -> None:
    ns = run(
        code("""
        total = 0
        def add(x):
            global total
            total += x
        for value in [1, 2, 3]:
            add(value)
        first, *middle, last = range(5)
        (a, b), c = (1, 2), 3
        merged = {**{"x": 1}, "y": 2}
        items = [*middle, *"ab"]
    """)
    )
    assert ns["total"] == 6
    assert (ns["first"], ns["middle"], ns["last"]) == (0, [1, 2, 3], 4)
    assert (ns["a"], ns["b"], ns["c"]) == (1, 2, 3)
    assert ns["merged"] == {"x": 1, "y": 2}
    assert ns["items"] == [1, 2, 3, "a", "b"]


def test_comprehensions(run) -> None:
    ns = run(
        code("""
        squares = [i * i for i in range(5) if i % 2]
        table = {k: v for k, v in zip("abc", range(3))}
        unique = {c.upper() for c in "hello"}
        lazy = sum(i for i in range(4))
        nested = [[j for j in range(i)] for i in range(3)]
    """)
    )
    assert ns["squares"] == [1, 9]
    assert ns["table"] == {"a": 0, "b": 1, "c": 2}
    assert ns["unique"] == set("HELO")
    assert ns["lazy"] == 6
    assert ns["nested"] == [[], [0], [0, 1]]


def test_classes_inheritance_and_private_state(run) -> None:
    ns = run(
        code("""
        class Animal:
            kind = "animal"
            def __init__(self, name):
                self.name = name
                self._sound = "..."
                self.__secret = 42
            def speak(self):
                return f"{self.name} says {self._sound}"
            def secret(self):
                return self.__secret
            @property
            def loud(self):
                return self.speak().upper()
            @classmethod
            def make(cls, name):
                return cls(name)
            @staticmethod
            def legs():
                return 4
            def __repr__(self):
                return f"<{type(self).__name__} {self.name}>"
            def __eq__(self, other):
                return isinstance(other, Animal) and other.name == self.name

        class Dog(Animal):
            kind = "dog"
            def __init__(self, name):
                super().__init__(name)
                self._sound = "woof"

        rex = Dog.make("Rex")
        rex.name += "!"
        rex.tags = []
        rex.tags += ["good"]
        a, rex.nick = 1, "R"
        del rex.nick
        result = (rex.speak(), rex.loud, rex.secret(), Dog.legs(), repr(rex), rex.kind,
                  rex == Dog("Rex!"), rex.tags, hasattr(rex, "nick"), Dog.__name__)
    """)
    )
    assert ns["result"] == (
        "Rex! says woof",
        "REX! SAYS WOOF",
        42,
        4,
        "<Dog Rex!>",
        "dog",
        True,
        ["good"],
        False,
        "Dog",
    )


def test_dataclasses_and_typing(run) -> None:
    ns = run(
        code("""
        from dataclasses import dataclass, field, asdict
        from typing import Optional
        import collections

        @dataclass
        class Point:
            x: int
            y: int = 0
            tags: list = field(default_factory=list)
            label: Optional[str] = None

            def norm(self) -> float:
                return (self.x ** 2 + self.y ** 2) ** 0.5

        p = Point(3, 4)
        Pair = collections.namedtuple("Pair", "left right")
        result = (p.norm(), asdict(p), Point(1) == Point(1), Pair(1, 2).right)
    """)
    )
    assert ns["result"] == (5.0, {"x": 3, "y": 4, "tags": [], "label": None}, True, 2)


def test_try_except_finally_and_with(run) -> None:
    ns = run(
        code("""
        log = []
        class Managed:
            def __enter__(self):
                log.append("enter")
                return self
            def __exit__(self, *exc):
                log.append("exit")
                return False
        try:
            with Managed() as m:
                raise KeyError("k")
        except (KeyError, ValueError) as e:
            log.append(f"caught {e!r}")
        else:
            log.append("no error")
        finally:
            log.append("finally")
        try:
            1 / 0
        except:
            log.append("bare")
        try:
            raise ExceptionGroup("g", [ValueError(1), TypeError(2)])
        except* ValueError:
            log.append("value")
        except* TypeError:
            log.append("type")
    """)
    )
    assert ns["log"] == [
        "enter",
        "exit",
        "caught KeyError('k')",
        "finally",
        "bare",
        "value",
        "type",
    ]


def test_match_statements(run) -> None:
    ns = run(
        code("""
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
            y: int
        def describe(value):
            match value:
                case {"kind": "circle", "r": r}:
                    return f"circle {r}"
                case Point(x=0, y=y):
                    return f"on the y axis at {y}"
                case Point(x, y) if x == y:
                    return "diagonal"
                case [first, *rest]:
                    return f"list from {first} with {len(rest)} more"
                case str() as s:
                    return f"text {s}"
                case _:
                    return "other"
        result = [describe(v) for v in [{"kind": "circle", "r": 2}, Point(0, 5), Point(2, 2),
                                        [1, 2, 3], "hi", 4.5]]
    """)
    )
    assert ns["result"] == [
        "circle 2",
        "on the y axis at 5",
        "diagonal",
        "list from 1 with 2 more",
        "text hi",
        "other",
    ]


def test_strings_format_and_builtins(run) -> None:
    ns = run(
        code("""
        name, n = "world", 3.14159
        a = f"hello {name!r} {n:.2f} {n:{'>'}10.1f}"
        b = "{} and {x} and {}".format(1, 3, x=2)
        c = "{who}".format_map({"who": "map"})
        d = str.format("{0}-{1}", "x", "y")
        e = format(3.5, ".1f") + format(7)
        f = ("{0[1]} {0[k]}".format({1: "one", "k": "kay"}))
        g = (type(3) is int, isinstance(int, type), type(int) is type, type("s").__name__)
        h = sorted(dir([]))[:2], getattr([], "nope", "default"), hasattr("x", "upper")
    """)
    )
    assert ns["a"] == "hello 'world' 3.14        3.1"
    assert ns["b"] == "1 and 2 and 3"
    assert (ns["c"], ns["d"], ns["e"], ns["f"]) == ("map", "x-y", "3.57", "one kay")
    assert ns["g"] == (True, True, True, "str")
    assert ns["h"] == (["append", "clear"], "default", True)


def test_safe_stdlib_imports(run) -> None:
    ns = run(
        code("""
        import math, json, re, datetime, itertools, functools, statistics, random, string
        import decimal, fractions
        from collections import Counter, defaultdict
        from collections.abc import Mapping
        import collections.abc
        result = (
            math.sqrt(16), json.loads('{"a": 1}')["a"], re.findall(r"\\d", "a1b2"),
            datetime.date(2024, 1, 2).isoformat(), list(itertools.islice(itertools.count(), 3)),
            functools.reduce(lambda a, b: a + b, [1, 2, 3]), statistics.mean([1, 2, 3]),
            Counter("aab").most_common(1), isinstance({}, Mapping), string.ascii_lowercase[:3],
            str(decimal.Decimal("1.10") + decimal.Decimal("2")), fractions.Fraction(1, 3) * 3,
            isinstance({}, collections.abc.Mapping),
        )
        random.seed(1)
    """)
    )
    assert ns["result"] == (
        4.0,
        1,
        ["1", "2"],
        "2024-01-02",
        [0, 1, 2],
        6,
        2,
        [("a", 2)],
        True,
        "abc",
        "3.10",
        1,
        True,
    )


def test_prints_are_captured(run) -> None:
    ns = run('print("a", 1, sep="-", end="!")\nprint()\nprint("b")')
    assert ns["_output"] == "a-1!\nb\n"


def test_state_carries_across_runs(policy) -> None:
    from agex.sandbox import Sandbox

    sandbox = Sandbox(policy)
    namespace = sandbox.namespace({"start": 10})
    sandbox.run("def inc(x):\n    return x + 1\ncount = inc(start)", namespace)
    result = sandbox.run("count = inc(count)\nclass K:\n    pass\nk = K()", namespace)
    assert result.error is None
    assert namespace["count"] == 12
    assert not [k for k in namespace if k.startswith("_agex")]


@pytest.mark.parametrize("source", ["x = 1", "for i in range(3): pass", "a = [1]; a[0] += 1"])
def test_plain_code_is_not_rewritten(source) -> None:
    """Code that touches no attribute compiles to the same bytecode as native Python."""
    from agex.sandbox.rewrite import compile_agent_code

    native = compile(source, "<agent>", "exec", dont_inherit=True)
    assert compile_agent_code(source).co_code == native.co_code


def test_context_managers_keep_their_semantics(run, policy) -> None:
    ns = run(
        code("""
        class Quiet:
            def __enter__(self):
                return "entered"
            def __exit__(self, kind, value, tb):
                return kind is KeyError
        with Quiet() as got:
            raise KeyError("suppressed, as in Python")
        try:
            with 5:
                pass
        except TypeError as e:
            message = str(e)
        async def use():
            class A:
                async def __aenter__(self):
                    return 1
                async def __aexit__(self, *exc):
                    return False
            async with A() as one:
                return one
        coroutine = use()
    """)
    )
    assert ns["got"] == "entered"
    assert ns["message"] == "'int' object does not support the context manager protocol"
    import asyncio

    # Agent code runs inside a run only: the host drives it with Sandbox.call.
    assert Sandbox(policy).call(asyncio.run, ns["coroutine"]) == 1


def test_namedtuple_api(run) -> None:
    ns = run(
        code("""
        import collections
        P = collections.namedtuple("P", "x y")
        p = P(1, 2)
        out = (p._asdict(), p._replace(x=5), P._fields, P._make([3, 4]))
    """)
    )
    assert ns["out"][0] == {"x": 1, "y": 2}
    assert tuple(ns["out"][1]) == (5, 2)
    assert ns["out"][2] == ("x", "y")
    assert tuple(ns["out"][3]) == (3, 4)


@pytest.mark.parametrize(
    "expression",
    [
        '"{.real} {}".format(3, 4)',
        '"{[0]}".format([7])',
        '"{:{}}|".format(5, 3)',
        '"{0} {1} {0}".format("a", "b")',
        '"{x:>{w}}".format(x=1, w=3)',
        '"{{}} {}".format(9)',
        '"{!r:>{}}".format("s", 5)',
        '"{0:{1}{2}}".format(3.14159, ".", "2f")',
        '"{a[k]}".format_map({"a": {"k": "v"}})',
    ],
)
def test_format_behaves_as_native(run, expression) -> None:
    assert run(f"x = {expression}")["x"] == eval(expression)


def test_format_numbering_errors_as_native(policy) -> None:
    from agex.sandbox import Sandbox

    result = Sandbox(policy).run('"{} {0}".format(1)')
    assert result.error.splitlines()[-1] == (
        "ValueError: cannot switch from manual field specification to automatic field numbering"
    )


def test_match_class_patterns_with_agent_and_stdlib_classes(run) -> None:
    ns = run(
        code("""
        from dataclasses import dataclass
        import fractions
        @dataclass
        class Pair:
            left: int
            _right: int
        def what(x):
            match x:
                case Pair(a, b):
                    return ("pair", a, b)
                case fractions.Fraction(numerator=n):
                    return ("fraction", n)
                case int(i):
                    return ("int", i)
            return None
        out = [what(Pair(1, 2)), what(fractions.Fraction(3, 4)), what(5), what("s")]
    """)
    )
    assert ns["out"] == [("pair", 1, 2), ("fraction", 3), ("int", 5), None]
    assert not [k for k in ns if k.startswith("_agex")]


def test_del_of_several_attributes_and_subscript_targets(run) -> None:
    ns = run(
        code("""
        class A:
            pass
        a = A()
        a.b, a.c, a.i = 1, 2, 0
        del (a.b, a.c)
        d = {}
        xs = [5, 6]
        out = [d[a.i] for d[a.i] in xs]
        gone = (hasattr(a, "b"), hasattr(a, "c"))
    """)
    )
    assert ns["gone"] == (False, False)
    assert ns["out"] == [5, 6]
