"""Signals the agent cannot catch, time limits, cancellation, captured output and the
errors the agent is shown."""

import contextlib
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agex.errors import CodeRejected, SandboxCancelled, SandboxTimeout
from agex.sandbox import CancelScope, Policy, Sandbox, Signal


class Done(Signal):
    """What the loop's task_success raises."""


def finish(value):
    raise Done.issue(value)


#: A context manager whose __exit__ suppresses whatever it is given.
SWALLOW = """
class Swallow:
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return True
"""


@pytest.fixture
def sandbox() -> Sandbox:
    policy = Policy()
    policy.fn(lambda: None, name="noop")
    return Sandbox(policy)


def run(sandbox: Sandbox, code: str, **kwargs):
    namespace = sandbox.namespace(builtins={"finish": finish})
    return sandbox.run(textwrap.dedent(code), namespace, **kwargs), namespace


# -- signals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "handler",
    [
        "except Exception:",
        "except BaseException:",
        "except:",
        "except Done:",
        "except (ValueError, BaseException) as e:",
        "except* BaseException:",
    ],
)
def test_signals_pass_through_except_clauses(sandbox, handler) -> None:
    result, ns = run(
        sandbox,
        f"""
        try:
            finish(42)
        {handler}
            after = True
    """,
    )
    assert isinstance(result.signal, Done)
    assert result.signal.args == (42,)
    assert "after" not in ns
    assert result.error is None


def test_signal_swallowed_by_a_context_manager_still_ends_the_run(sandbox) -> None:
    result, ns = run(
        sandbox,
        SWALLOW
        + textwrap.dedent("""
        with Swallow():
            finish("done")
        carried_on = True
    """),
    )
    assert isinstance(result.signal, Done)
    assert result.signal.args == ("done",)
    assert "carried_on" not in ns


@pytest.mark.parametrize("escape", ["return 1", "break", "continue"])
def test_leaving_a_finally_block_is_refused(sandbox, escape) -> None:
    body = (
        escape
        if escape == "return 1"
        else f"for i in range(2):\n            pass\n        {escape}"
    )
    code = f"""
        def f():
            for _ in range(1):
                try:
                    finish(1)
                finally:
                    {body}
    """
    if escape != "return 1":
        code = "for _ in range(1):\n    try:\n        finish(1)\n    finally:\n        " + escape
    result, _ = run(sandbox, code)
    assert isinstance(result.exception, CodeRejected)
    assert "inside a finally block" in result.error


def test_loops_inside_finally_may_break(sandbox) -> None:
    result, ns = run(
        sandbox,
        """
        try:
            x = 1
        finally:
            for i in range(5):
                if i == 2:
                    break
    """,
    )
    assert result.error is None
    assert ns["i"] == 2


# -- time limits and cancellation ------------------------------------------------------


def test_infinite_loop_stops_on_time(sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(SandboxTimeout) as info:
        run(sandbox, "print('started')\nwhile True:\n    pass", timeout=0.5)
    assert time.monotonic() - start < 0.5 + 0.5
    assert info.value.output == "started\n"
    # The process, the thread and the sandbox are all still healthy.
    result, ns = run(sandbox, "x = sum(range(10))")
    assert (result.error, ns["x"]) == (None, 45)


def test_timeout_swallowed_by_agent_code_still_stops(sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(SandboxTimeout):
        run(
            sandbox,
            SWALLOW
            + textwrap.dedent("""
            while True:
                with Swallow():
                    while True:
                        pass
            """),
            timeout=0.3,
        )
    assert time.monotonic() - start < 0.3 + 0.5


def test_timeout_inside_nested_calls_and_generators(sandbox) -> None:
    with pytest.raises(SandboxTimeout):
        run(
            sandbox,
            """
            def forever():
                n = 0
                while True:
                    n += 1
                    yield n
            for value in forever():
                noop()
        """,
            timeout=0.3,
        )


def test_no_interrupt_leaks_after_a_fast_run(sandbox) -> None:
    """Many runs finishing right at their deadline: nothing may be raised in our code later."""
    for _ in range(200):
        with contextlib.suppress(SandboxTimeout):
            run(sandbox, "x = 0\nfor i in range(3000):\n    x += i", timeout=0.0005)
    time.sleep(0.3)
    total = sum(range(100_000))  # would be interrupted by a stray exception
    assert total == 4_999_950_000


def test_cancel_from_another_thread(sandbox) -> None:
    scope = CancelScope()
    threading.Timer(0.2, scope.cancel).start()
    start = time.monotonic()
    with pytest.raises(SandboxCancelled):
        run(sandbox, "while True:\n    pass", cancel=scope)
    assert time.monotonic() - start < 0.2 + 0.5


def test_cancelled_before_start(sandbox) -> None:
    scope = CancelScope()
    scope.cancel()
    with pytest.raises(SandboxCancelled):
        run(sandbox, "while True:\n    pass", cancel=scope)


def test_runs_in_several_threads_are_timed_separately(sandbox) -> None:
    outcomes = {}

    def worker(name, code, timeout):
        try:
            _, ns = run(sandbox, code, timeout=timeout)
            outcomes[name] = ns.get("x")
        except SandboxTimeout:
            outcomes[name] = "timeout"

    threads = [
        threading.Thread(target=worker, args=("loop", "while True:\n    pass", 0.3)),
        threading.Thread(target=worker, args=("quick", "x = 5", 5)),
        threading.Thread(target=worker, args=("slowish", "x = sum(range(10**6))", 5)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert outcomes == {"loop": "timeout", "quick": 5, "slowish": 499999500000}


# -- output --------------------------------------------------------------------------


def test_output_is_capped_with_a_visible_note() -> None:
    sandbox = Sandbox(max_output=100)
    result = sandbox.run("for i in range(1000):\n    print('line', i)")
    assert len(result.output) < 200
    assert result.output.startswith("line 0\nline 1\n")
    assert result.output.rstrip().endswith("more characters not shown]")


def test_output_is_per_run(sandbox) -> None:
    first, _ = run(sandbox, "print('one')")
    second, _ = run(sandbox, "print('two')")
    assert (first.output, second.output) == ("one\n", "two\n")


# -- errors, as the agent sees them -----------------------------------------------------


def test_traceback_shows_only_agent_lines(sandbox) -> None:
    result, _ = run(
        sandbox,
        """
        def outer(x):
            return inner(x)

        def inner(x):
            return {"a": 1}[x]

        value = outer("b")
    """,
    )
    assert result.error == (
        "Traceback (most recent call last):\n"
        "  line 8, in <module>\n"
        '    value = outer("b")\n'
        "  line 3, in outer\n"
        "    return inner(x)\n"
        "  line 6, in inner\n"
        '    return {"a": 1}[x]\n'
        "KeyError: 'b'\n"
    )


def test_traceback_through_host_code_hides_it(sandbox) -> None:
    result, _ = run(sandbox, "import json\njson.loads('{nope')")
    assert result.error.startswith("Traceback (most recent call last):\n  line 2, in <module>\n")
    assert "JSONDecodeError: Expecting property name" in result.error
    assert "agex" not in result.error
    assert "json/" not in result.error


def test_chained_errors(sandbox) -> None:
    result, _ = run(
        sandbox,
        """
        try:
            1 / 0
        except ZeroDivisionError as e:
            raise ValueError("bad input") from e
    """,
    )
    assert "ZeroDivisionError: division by zero" in result.error
    assert "direct cause" in result.error
    assert result.error.rstrip().endswith("ValueError: bad input")
    assert result.error.index("ZeroDivisionError") < result.error.index("ValueError")


def test_syntax_error_points_at_the_line(sandbox) -> None:
    result, _ = run(sandbox, "x = 1\ny = (2 +\n")
    assert isinstance(result.exception, SyntaxError)
    assert "line 2" in result.error
    assert result.error.rstrip().splitlines()[-1].startswith("SyntaxError:")


def test_guard_errors_show_no_internals(sandbox) -> None:
    result, _ = run(sandbox, "import math\nx = getattr(math, '__loader__')")
    assert result.error.splitlines()[-1] == (
        "AccessDenied: dunder attribute '__loader__' is not accessible in agent code "
        "(module 'math')"
    )
    assert "guards" not in result.error


def test_a_timed_run_leaves_the_interpreter_as_it_found_it() -> None:
    """Disarming a watch must not leave CPython's eval breaker set: that hangs the next
    ``sys.settrace`` (debuggers, coverage) and slows every later line of the process."""
    script = textwrap.dedent(
        """
        import sys
        from agex.errors import SandboxTimeout
        from agex.sandbox import Sandbox
        sandbox = Sandbox()
        sandbox.run("x = 1", sandbox.namespace(), timeout=5)  # the watch never fires
        try:
            sandbox.run("while True: pass", sandbox.namespace(), timeout=0.2)
        except SandboxTimeout:
            pass
        sys.settrace(lambda *args: None)
        (lambda: 1)()
        sys.settrace(None)
        print("done")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "done", done.stderr
