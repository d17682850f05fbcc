"""Lazy iterators nested past a limit raise RecursionError instead of overflowing the C
stack (which kills the process: CPython advances ``map`` of ``map`` of ... in C, unchecked).

Anything that might crash runs in a subprocess, so a regression fails a test instead of
taking pytest down with it.
"""

import builtins
import collections
import functools
import itertools
import operator
import subprocess
import sys
import textwrap

import pytest

from agex.sandbox import Sandbox, nesting
from agex.sandbox.nesting import BUILTINS, ITERTOOLS, MAX_NESTING

n = nesting
TOO_DEEP = "nest lazy iterators more than"


def outcome(make):
    """What a call gives: its items (at most 50), or the type of what it raised."""
    try:
        result = make()
        if isinstance(result, tuple):  # tee
            return ("ok", [list(itertools.islice(r, 50)) for r in result])
        return ("ok", list(itertools.islice(result, 50)))
    except Exception as exc:
        return ("raised", type(exc))


# -- the tables ------------------------------------------------------------------------


def test_tables_name_the_replacements() -> None:
    assert set(BUILTINS) == {"map", "filter", "zip", "enumerate", "iter"}
    expected = {
        "accumulate",
        "chain",
        "compress",
        "cycle",
        "dropwhile",
        "filterfalse",
        "groupby",
        "islice",
        "pairwise",
        "starmap",
        "takewhile",
        "tee",
        "zip_longest",
    }
    if hasattr(itertools, "batched"):
        expected.add("batched")
    assert set(ITERTOOLS) == expected
    for name, cls in [*BUILTINS.items(), *ITERTOOLS.items()]:
        if isinstance(cls, type):
            native = getattr(builtins, name, None) or getattr(itertools, name)
            assert issubclass(cls, native)
            assert cls.__name__ == native.__name__
            assert n.STAND_INS[native] is cls


@pytest.mark.parametrize("name", sorted(k for k, v in ITERTOOLS.items() if isinstance(v, type)))
def test_itertools_classes_iterate_in_c(name) -> None:
    """No ``__next__`` written in Python: iterating is the real type's C code."""
    cls = ITERTOOLS[name]
    assert cls.__next__ is getattr(itertools, name).__next__
    assert "__next__" not in cls.__dict__


@pytest.mark.parametrize("name", ["map", "filter", "zip", "enumerate"])
def test_builtin_classes_iterate_in_c(name) -> None:
    cls = BUILTINS[name]
    assert cls.__next__ is getattr(builtins, name).__next__
    assert "__next__" not in cls.__dict__


def test_instances_look_like_the_real_ones() -> None:
    m = n.map(abs, [1])
    assert type(m).__name__ == "map"
    assert isinstance(m, builtins.map)
    assert isinstance(m, n.map)
    assert repr(m).startswith("<map object at 0x")
    assert repr(n.chain([1])).startswith("<itertools.chain object at 0x")
    assert isinstance(n.zip([1]), collections.abc.Iterator)
    assert not hasattr(m, "__dict__")


# -- the same results as the real ones ---------------------------------------------------

Pair = collections.namedtuple("Pair", "a b")

CALLS = {
    "map several iterables": lambda m: m.map(pow, [2, 3, 4], [1, 2]),
    "map a builtin": lambda m: m.map(str.upper, "abc"),
    "map list": lambda m: m.map(list, ["ab", (1, 2)]),
    "map tuple": lambda m: m.map(tuple, ["ab"]),
    "map a partial": lambda m: m.map(functools.partial(pow, 2), [1, 2, 3]),
    "map a class": lambda m: m.map(Pair, [1, 2], [3, 4]),
    "map no iterable": lambda m: m.map(abs),
    "map not callable": lambda m: m.map(5, [1]),
    "map keyword": lambda m: m.map(abs, [1], strict=True),
    "filter none": lambda m: m.filter(None, [0, 1, "", "a", [], [0]]),
    "filter lambda": lambda m: m.filter(lambda v: v % 2, range(10)),
    "filter bool": lambda m: m.filter(bool, [0, 2]),
    "filter set": lambda m: m.filter(set, ["", "a"]),
    "zip": lambda m: m.zip("abc", range(5)),
    "zip none": lambda m: m.zip(),
    "zip strict": lambda m: m.zip([1, 2], [3, 4], strict=True),
    "zip strict mismatch": lambda m: m.zip([1, 2], [3], strict=True),
    "enumerate": lambda m: m.enumerate("ab"),
    "enumerate start": lambda m: m.enumerate("ab", 10),
    "enumerate keywords": lambda m: m.enumerate(iterable="ab", start=-1),
    "iter": lambda m: m.iter([1, 2]),
    "iter callable": lambda m: m.iter([4, 0, 3, 2, 1].pop, 0),
    "iter class": lambda m: m.iter(list, [1]),
    "iter partial": lambda m: m.iter(functools.partial(next, iter([1, 2, None, 3])), None),
    "iter not callable": lambda m: m.iter(5, 0),
    "iter three arguments": lambda m: m.iter(list, 1, 2),
    "iter not iterable": lambda m: m.iter(5),
    "accumulate": lambda m: m.accumulate([1, 2, 3]),
    "accumulate func": lambda m: m.accumulate([1, 2, 3], operator.mul),
    "accumulate func keyword": lambda m: m.accumulate([1, 2, 3], func=max),
    "accumulate initial": lambda m: m.accumulate([1, 2, 3], initial=100),
    "accumulate both": lambda m: m.accumulate([1, 2], operator.sub, initial=10),
    "accumulate a class": lambda m: m.accumulate(["a", "b"], func=lambda a, b: a + b),
    "chain": lambda m: m.chain("ab", [1], (), range(2)),
    "chain nothing": lambda m: m.chain(),
    "from_iterable lists": lambda m: m.chain.from_iterable([[1, 2], (3,), "ab", range(2), {5: 0}]),
    "from_iterable iterators": lambda m: m.chain.from_iterable(
        [iter([1]), m.map(abs, [-2]), (v for v in [3]), m.zip([4])]
    ),
    "from_iterable generator": lambda m: m.chain.from_iterable([i] * i for i in range(4)),
    "from_iterable not iterable": lambda m: m.chain.from_iterable([[1], 5]),
    "from_iterable on an instance": lambda m: m.chain().from_iterable([[1], [2]]),
    "compress": lambda m: m.compress("abcd", [1, 0, 1]),
    "compress keywords": lambda m: m.compress(data="abcd", selectors=[0, 1, 1, 1]),
    "cycle": lambda m: m.cycle([1, 2]),
    "cycle empty": lambda m: m.cycle([]),
    "dropwhile": lambda m: m.dropwhile(lambda v: v < 3, [1, 2, 3, 1]),
    "takewhile": lambda m: m.takewhile(lambda v: v < 3, [1, 2, 3, 1]),
    "takewhile bool": lambda m: m.takewhile(bool, [1, 2, 0, 1]),
    "filterfalse": lambda m: m.filterfalse(lambda v: v % 2, range(6)),
    "filterfalse none": lambda m: m.filterfalse(None, [0, 1, "", "a"]),
    "groupby": lambda m: ((k, list(g)) for k, g in m.groupby("aabccc")),
    "groupby key": lambda m: ((k, list(g)) for k, g in m.groupby(range(7), key=lambda v: v // 3)),
    "groupby key positional": lambda m: ((k, list(g)) for k, g in m.groupby(["a", "bb"], len)),
    "groupby key list": lambda m: ((k, list(g)) for k, g in m.groupby(["ab", "ab"], key=list)),
    "groupby groups skipped": lambda m: (k for k, _ in m.groupby("aabbb")),
    "islice stop": lambda m: m.islice(range(10), 3),
    "islice none": lambda m: m.islice(range(3), None),
    "islice start stop": lambda m: m.islice(range(10), 2, 5),
    "islice step": lambda m: m.islice(range(10), 1, None, 3),
    "islice negative": lambda m: m.islice(range(10), -1),
    "islice keyword": lambda m: m.islice(range(10), stop=3),
    "pairwise": lambda m: m.pairwise("abcd"),
    "pairwise short": lambda m: m.pairwise("a"),
    "starmap": lambda m: m.starmap(pow, [(2, 3), (3, 2)]),
    "starmap lists": lambda m: m.starmap(pow, [[2, 3], iter([2, 4])]),
    "starmap namedtuple": lambda m: m.starmap(operator.sub, [Pair(5, 3)]),
    "starmap not iterable": lambda m: m.starmap(pow, [5]),
    "starmap a class": lambda m: m.starmap(list, [("ab",)]),
    "tee": lambda m: m.tee(iter([1, 2, 3])),
    "tee three": lambda m: m.tee([1, 2], 3),
    "tee of a tee": lambda m: m.tee(m.tee([1, 2])[0]),
    "zip_longest": lambda m: m.zip_longest("ab", [1, 2, 3]),
    "zip_longest fillvalue": lambda m: m.zip_longest("ab", [1, 2, 3], fillvalue="-"),
    "zip_longest bad keyword": lambda m: m.zip_longest("ab", fill=0),
}


class Native:
    """The real builtins and itertools, under the names the calls use."""

    map, filter, zip, enumerate, iter = builtins.map, filter, zip, enumerate, iter
    accumulate, chain, compress, cycle = (
        itertools.accumulate,
        itertools.chain,
        itertools.compress,
        itertools.cycle,
    )
    dropwhile, filterfalse, groupby, islice = (
        itertools.dropwhile,
        itertools.filterfalse,
        itertools.groupby,
        itertools.islice,
    )
    pairwise, starmap, takewhile, tee, zip_longest = (
        itertools.pairwise,
        itertools.starmap,
        itertools.takewhile,
        itertools.tee,
        itertools.zip_longest,
    )


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_same_results_as_the_real_ones(call) -> None:
    assert outcome(lambda: call(n)) == outcome(lambda: call(Native))


def test_moderately_deep_chains_work() -> None:
    x, y = iter(range(5)), iter(range(5))
    for _ in range(MAX_NESTING // 2):
        x = n.map(operator.neg, n.filter(lambda v: v is not None, x))
        y = map(operator.neg, filter(lambda v: v is not None, y))
    assert list(x) == list(y) == [0, 1, 2, 3, 4]


# -- nesting past the limit ------------------------------------------------------------


def nest(step, x, times=MAX_NESTING + 1):
    """``x`` with ``step`` applied up to ``times`` times: the result, how many steps were
    built, and the RecursionError that stopped the next one (None if none did)."""
    for built in range(times):
        try:
            x = step(x)
        except RecursionError as exc:
            return x, built, exc
    return x, times, None


class Handing:
    """An iterable whose ``__iter__`` hands over another iterator, as an agent's class may:
    what a wrapper holds is that iterator, not the object it was given."""

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return self.it


#: name -> (one step of nesting, how much deeper it makes the chain)
STEPS = {
    "map": (lambda x: n.map(abs, x), 1),
    "map several": (lambda x: n.map(max, x, itertools.repeat(0)), 1),
    "map second iterable": (lambda x: n.map(max, itertools.repeat(0), x), 1),
    "filter": (lambda x: n.filter(None, x), 1),
    "zip": (lambda x: n.zip(x), 1),
    "zip strict": (lambda x: n.zip(x, strict=False), 1),
    "enumerate": (lambda x: n.enumerate(x), 1),
    "enumerate keyword": (lambda x: n.enumerate(iterable=x), 1),
    "chain": (lambda x: n.chain([], x), 1),
    "chain.from_iterable": (lambda x: n.chain.from_iterable(n.zip(x)), 3),
    "accumulate": (lambda x: n.accumulate(x), 1),
    "accumulate initial": (lambda x: n.accumulate(x, initial=1), 1),
    "compress": (lambda x: n.compress(x, itertools.repeat(1)), 1),
    "compress selectors": (lambda x: n.compress(itertools.repeat(1), selectors=x), 1),
    "cycle": (lambda x: n.cycle(x), 1),
    "dropwhile": (lambda x: n.dropwhile(operator.not_, x), 1),
    "filterfalse": (lambda x: n.filterfalse(operator.not_, x), 1),
    "groupby": (lambda x: n.groupby(x), 1),
    "groupby's groups": (lambda x: next(n.groupby(x))[1], 2),
    "islice": (lambda x: n.islice(x, 5), 1),
    "islice step": (lambda x: n.islice(x, 0, None, 1), 1),
    "pairwise": (lambda x: n.pairwise(x), 1),
    "starmap": (lambda x: n.starmap(operator.pos, n.zip(x)), 3),
    "takewhile": (lambda x: n.takewhile(bool, x), 1),
    "tee": (lambda x: n.map(abs, n.tee(x)[0]), 2),
    "zip_longest": (lambda x: n.zip_longest(x), 1),
}
STEPS.update(
    {
        "map over __iter__": (lambda x: n.map(abs, Handing(x)), 1),
        "zip over __iter__": (lambda x: n.zip([1], Handing(x)), 1),
        "groupby over __iter__": (lambda x: n.groupby(Handing(x)), 1),
        "from_iterable over __iter__": (lambda x: n.chain.from_iterable(Handing(n.zip(x))), 3),
        "starmap over __iter__": (lambda x: n.starmap(operator.pos, Handing(n.zip(x))), 3),
        "tee over __iter__": (lambda x: n.map(abs, n.tee(Handing(x))[0]), 2),
    }
)
if hasattr(itertools, "batched"):
    STEPS["batched"] = (lambda x: n.batched(x, 1), 1)


@pytest.mark.parametrize("name", STEPS)
def test_nesting_past_the_limit_raises(name) -> None:
    step, per_step = STEPS[name]
    x, built, error = nest(step, itertools.repeat(1))
    assert built == MAX_NESTING // per_step
    assert TOO_DEEP in str(error)
    assert "list(" in str(error)  # says what to do instead
    if name != "pairwise":  # pairwise of pairwise... reads 2**depth items to start
        next(x)  # what was built still works


def test_the_error_names_the_iterator() -> None:
    x, _, error = nest(n.zip_longest, [1])
    assert str(error).startswith("zip_longest() would nest")
    _, _, error = nest(n.chain.from_iterable, x)
    assert str(error).startswith("chain.from_iterable() would nest")


def test_depth_adds_up_across_kinds() -> None:
    kinds = itertools.cycle(
        [
            lambda x: n.map(abs, x),
            lambda x: n.filter(None, x),
            lambda x: n.islice(x, 3),
            lambda x: n.takewhile(bool, x),
        ]
    )
    x, built, error = nest(lambda x: next(kinds)(x), iter([1]))
    assert (built, type(error)) == (MAX_NESTING, RecursionError)
    assert list(x) == [1]


def test_the_deepest_argument_counts() -> None:
    deep = iter([1])
    for _ in range(MAX_NESTING - 1):
        deep = n.map(abs, deep)
    n.zip([1], deep, [2])  # depth MAX_NESTING: fine
    with pytest.raises(RecursionError):
        n.zip([1], n.map(abs, deep))
    with pytest.raises(RecursionError):
        n.zip_longest([1], n.map(abs, deep), fillvalue=0)
    with pytest.raises(RecursionError):
        n.compress(selectors=n.map(abs, deep), data=[1])


def test_real_iterators_from_host_code_count_too() -> None:
    """A real map, chain or tee (from a host function, or from Counter.elements()) is as
    deep as what it wraps."""
    x = iter([1])
    for _ in range(MAX_NESTING):
        x = builtins.map(abs, itertools.chain([], x))
    with pytest.raises(RecursionError):
        n.map(abs, x)
    x = iter([1])
    for _ in range(MAX_NESTING):
        x = itertools.tee(builtins.zip(x))[1]
    with pytest.raises(RecursionError):
        n.enumerate(x)
    elements = collections.Counter(a=2).elements()
    assert n._depth(elements) >= 1
    assert list(n.map(str, elements)) == ["a", "a"]


def test_depth_is_not_in_agent_reach() -> None:
    """A subclass (as a class statement in agent code would write) cannot reset it."""

    class Shadowed(n.map):
        _nesting = 0

    class Property(n.map):
        @property
        def _nesting(self):
            return 0

    for cls in (Shadowed, Property):
        _, built, error = nest(lambda x, cls=cls: cls(abs, x), [1])
        assert (built, type(error)) == (MAX_NESTING, RecursionError)
        assert n._depth(cls(abs, [1])) == 1
        assert list(cls(abs, [-1])) == [1]


# -- callbacks and items that iterate -----------------------------------------------------


def test_callbacks_that_iterate_without_a_counted_call_are_wrapped() -> None:
    for func in (list, tuple, set, frozenset, dict, bytes, functools.partial(list)):
        assert isinstance(n._counted(func), staticmethod)
    for func in (abs, len, str, int, bool, None, str.upper, [].append, lambda v: v, n.map):
        assert n._counted(func) is func


# The payloads run in one subprocess: each prints its name before it starts, so a crash
# names the payload that caused it.
RUNNER = r"""
import functools, itertools, operator, sys, threading
from agex.sandbox.nesting import BUILTINS, ITERTOOLS
names = {**BUILTINS, **ITERTOOLS, "functools": functools, "operator": operator,
         "repeat": itertools.repeat}
# Tracked iterators refuse at MAX_NESTING and the rest end at the recursion limit (1000):
# N only needs to be well past both. (With the real builtins, 10**5 to 10**6 crash.)
N = 20_000
for name, code in PAYLOADS:
    print("start", name, flush=True)
    namespace = dict(names, N=N)
    try:
        exec(code, namespace)
        result = "ran"
    except RecursionError:
        result = "refused"
    namespace.clear()  # frees the chain
    print("done", name, result, flush=True)
"""

#: name -> agent-style code that, with the real builtins, kills the process.
PAYLOADS = {
    "map": "x = iter([1])\nfor _ in range(N): x = map(abs, x)\nnext(x)",
    "filter": "x = iter([1])\nfor _ in range(N): x = filter(None, x)\nnext(x)",
    "zip": "x = iter([1])\nfor _ in range(N): x = zip(x)\nnext(x)",
    "zip star": "x = iter([1])\nfor _ in range(N): x = zip(*[x])\nnext(x)",
    "enumerate freed": "x = iter([1])\nfor _ in range(N): x = enumerate(x)\ndel x",
    "chain": "x = iter([1])\nfor _ in range(N): x = chain(x)\nnext(x)",
    "islice freed": "x = iter([1])\nfor _ in range(N): x = islice(x, 5)\ndel x",
    "accumulate": "x = iter([1])\nfor _ in range(N): x = accumulate(x)\nnext(x)",
    "starmap": "x = iter([(1,)])\nfor _ in range(N): x = starmap(lambda *a: a, x)\nnext(x)",
    "takewhile": "x = iter([1])\nfor _ in range(N): x = takewhile(bool, x)\nnext(x)",
    "dropwhile": "x = iter([1])\nfor _ in range(N): x = dropwhile(operator.not_, x)\nnext(x)",
    "filterfalse": "x = iter([1])\nfor _ in range(N): x = filterfalse(None, x)\nnext(x)",
    "compress": "x = iter([1])\nfor _ in range(N): x = compress(x, repeat(1))\nnext(x)",
    "zip_longest": "x = iter([1])\nfor _ in range(N): x = zip_longest(x)\nnext(x)",
    "pairwise": "x = iter([1, 2])\nfor _ in range(N): x = pairwise(x)\nnext(x)",
    "cycle": "x = iter([1])\nfor _ in range(N): x = cycle(x)\nnext(x)",
    "groupby": "x = iter([1])\nfor _ in range(N): x = groupby(x)\nnext(x)",
    "groupby's groups": "x = iter([1])\nfor _ in range(N): x = next(groupby(x))[1]\nnext(x)",
    "tee": "x = iter([1])\nfor _ in range(N): x = map(abs, tee(x)[0])\nnext(x)",
    # items a wrapper iterates itself
    "chain.from_iterable items": (
        "x = iter([1])\nfor _ in range(N): x = chain.from_iterable([x])\nnext(x)"
    ),
    "chain.from_iterable repeat": (
        "x = iter([1])\nfor _ in range(N): x = chain.from_iterable(repeat(x, 1))\nnext(x)"
    ),
    "starmap items": "x = iter([(1,)])\nfor _ in range(N): x = starmap(max, [x])\nnext(x)",
    # callbacks that iterate their argument
    "map list": "x = iter([[1]])\nfor _ in range(N): x = map(list, [x])\nnext(x)",
    "map dict": "x = iter([(1, 2)])\nfor _ in range(N): x = map(dict, [x])\nnext(x)",
    "map partial": (
        "x = iter([[1]])\nfor _ in range(N): x = map(functools.partial(list), [x])\nnext(x)"
    ),
    "filter list": "x = iter([[1]])\nfor _ in range(N): x = filter(list, [x])\nnext(x)",
    "groupby key": "x = iter([[1]])\nfor _ in range(N): x = groupby([x], key=tuple)\nnext(x)",
    "iter partial": (
        "x = iter([1])\nfor _ in range(N): x = iter(functools.partial(list, x), None)\nnext(x)"
    ),
    # an object whose __iter__ hands over the chain
    "map over __iter__": (
        "class W:\n    def __init__(self, it):\n        self.it = it\n"
        "    def __iter__(self):\n        return self.it\n"
        "x = iter([1])\nfor _ in range(N): x = map(abs, W(x))\nnext(x)"
    ),
    "chain over __iter__": (
        "class W:\n    def __init__(self, it):\n        self.it = it\n"
        "    def __iter__(self):\n        return self.it\n"
        "x = iter([1])\nfor _ in range(N): x = chain(W(x))\nnext(x)"
    ),
    # generators in between
    "generator over map": "x = iter([1])\nfor _ in range(N): x = (v for v in map(abs, x))\nnext(x)",
}


def _run_payloads(payloads: dict[str, str], timeout: float = 240) -> dict[str, str]:
    script = f"PAYLOADS = {list(payloads.items())!r}\n" + RUNNER
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )
    lines = proc.stdout.split("\n")
    started = [line.split(" ", 1)[1] for line in lines if line.startswith("start ")]
    assert proc.returncode == 0, (
        f"payload {started[-1] if started else '?'!r} ended the process with "
        f"{proc.returncode}: {proc.stderr[-2000:]}"
    )
    results = {}
    for line in lines:
        if line.startswith("done "):
            name, _, result = line[5:].rpartition(" ")
            results[name] = result
    return results


def test_crash_payloads_end_in_a_recursion_error() -> None:
    results = _run_payloads(PAYLOADS)
    assert results == dict.fromkeys(PAYLOADS, "refused")


WORST_CASE = r"""
import sys, threading
from agex.sandbox.nesting import MAX_NESTING, map
class Step:
    def __init__(self, it):
        self.it = it
    def __iter__(self):
        return self
    def __next__(self):
        return next(self.it)
def main(unit):
    # As many counted frames as the recursion limit allows, each separated from the next
    # by MAX_NESTING maps: the deepest C stack agent code can build out of iterators.
    x = iter([1])
    for _ in range(sys.getrecursionlimit()):
        x = unit(x)
        for _ in range(MAX_NESTING - 1):
            x = map(abs, x)
    try:
        next(x)
    except RecursionError:
        pass
    print("survived", flush=True)
units = [lambda x: (v for v in x), Step, lambda x: map(lambda v: list(v)[0], [x])]
for unit in units:
    if sys.argv[1] == "thread":
        thread = threading.Thread(target=main, args=(unit,))
        thread.start()
        thread.join()
    else:
        main(unit)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_the_limit_leaves_room_for_the_recursion_limit(where) -> None:
    """A generator over MAX_NESTING maps over a generator over ..., as deep as the recursion
    limit lets generators go: on the main thread and in a thread of the default size."""
    proc = subprocess.run(
        [sys.executable, "-c", WORST_CASE, where], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["survived"] * 3


# -- in the sandbox ----------------------------------------------------------------------


def _wired() -> bool:
    sandbox = Sandbox()
    return (
        sandbox.builtins.get("map") is BUILTINS["map"]
        and sandbox.policy.view("itertools").chain is ITERTOOLS["chain"]
    )


wired = pytest.mark.skipif(
    not _wired(), reason="not wired: Guards.builtins() and stdlib.REPLACED do not use nesting"
)

SANDBOX_RUNNER = r"""
import sys
from agex.sandbox import Sandbox
sandbox = Sandbox()
result = sandbox.run(sys.argv[1], sandbox.namespace())
print("error:", result.error)
"""


@wired
@pytest.mark.parametrize(
    "code",
    [
        "x = iter([1])\nfor _ in range(10**6):\n    x = map(abs, x)\nprint(next(x))",
        "import itertools\nx = iter([1])\nfor _ in range(10**5):\n"
        "    x = itertools.chain.from_iterable([x])\nprint(next(x))",
        "from itertools import islice\nx = iter([1])\nfor _ in range(10**6):\n"
        "    x = islice(x, 3)\ndel x",
        "x = iter([[1]])\nfor _ in range(10**5):\n    x = map(list, [x])\nprint(next(x))",
        "x = iter([1])\nfor _ in range(10**5):\n    x = (v for v in x)\nprint(next(x))",
        "def g(x):\n    for v in x:\n        yield v\nx = iter([1])\nfor _ in range(10**5):\n"
        "    x = g(x)\nprint(next(x))",
    ],
    ids=["map", "chain.from_iterable", "islice freed", "map list", "genexp", "generator"],
)
def test_crash_payload_in_the_sandbox_is_an_error(code) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SANDBOX_RUNNER, code], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RecursionError" in proc.stdout


@wired
def test_agent_code_sees_map_and_not_its_depth(run) -> None:
    ns = run(
        textwrap.dedent("""
        import itertools
        m = map(abs, [-1, -2])
        name = type(m).__name__
        same = isinstance(m, map) and type(m) is map
        try:
            m._nesting
            read = True
        except Exception:
            read = False
        try:
            setattr(m, "_nesting", 0)
            wrote = True
        except Exception:
            wrote = False
        class Mine(map):
            _nesting = 0
        x = [1]
        try:
            for _ in range(1000):
                x = Mine(abs, x)
            forged = True
        except RecursionError:
            forged = False
        flat = list(itertools.chain.from_iterable([[1], map(abs, [-2])]))
        """)
    )
    assert ns["name"] == "map"
    assert ns["same"] is True
    assert (ns["read"], ns["wrote"], ns["forged"]) == (False, False, False)
    assert ns["flat"] == [1, 2]


def _stand_ins_wired() -> bool:
    return Sandbox().policy.exposed_class(builtins.map) is n.map


@pytest.mark.skipif(
    not (_wired() and _stand_ins_wired()),
    reason="not wired: the policy's stand-ins do not include nesting.STAND_INS",
)
def test_real_iterator_classes_are_out_of_reach(run) -> None:
    """``map.mro()`` and ``type()`` of a real iterator from the standard library would
    otherwise hand out the untracked classes."""
    ns = run(
        textwrap.dedent("""
        import collections, itertools
        via_mro = map.mro()[1] is map
        elements = collections.Counter(a=1).elements()
        via_type = type(elements) is itertools.chain
        """)
    )
    assert ns["via_mro"] is True
    assert ns["via_type"] is True


def test_generators_keep_their_protocol(run) -> None:
    """A generator between two others is iterated through a chain; sending into a
    generator, and ``yield from``'s result, are as in Python."""
    ns = run(
        textwrap.dedent("""
        def echo():
            got = yield "ready"
            while True:
                got = yield got * 2
        e = echo()
        first = next(e)
        doubled = e.send(21)
        def inner():
            yield 1
            return "done"
        def outer():
            result = yield from inner()
            yield result
        delegated = list(outer())
        piped = list(v + 1 for v in (w * 2 for w in range(3)))
        """)
    )
    assert (ns["first"], ns["doubled"]) == ("ready", 42)
    assert ns["delegated"] == [1, "done"]
    assert ns["piped"] == [1, 3, 5]
