"""One test per known way out of a Python sandbox.

Each attempt, if it worked, would write a file (or reach a module and record it). Every test
asserts that the attempt failed with an error and that nothing happened.
"""

import sys
import textwrap

import pytest

from agex.errors import AccessDenied, CallDenied, CodeRejected, ImportDenied
from agex.sandbox import Policy, Sandbox

from . import tools


@pytest.fixture
def attempt(tmp_path):
    marker = tmp_path / "escaped"

    def attempt(code: str, policy: Policy | None = None, expect=Exception):
        source = textwrap.dedent(code).replace("PATH", repr(str(marker)))
        sandbox = Sandbox(policy)
        namespace = sandbox.namespace()
        result = sandbox.run(source, namespace)
        assert not marker.exists(), "the escape wrote its file"
        assert "reached" not in namespace, "the escape reached its target"
        assert result.error is not None, "the attempt raised no error"
        assert isinstance(result.exception, expect), result.error
        return result

    return attempt


# -- walking the class hierarchy -----------------------------------------------------------


def test_subclasses_walk(attempt) -> None:
    attempt(
        """
        for cls in ().__class__.__mro__[1].__subclasses__():
            if cls.__name__ == "FileIO":
                cls(PATH, "w").write(b"x")
        """,
        expect=CodeRejected,
    )


def test_subclasses_walk_with_computed_names(attempt) -> None:
    attempt(
        """
        d = "__"
        cls = getattr((), d + "class" + d)
        reached = getattr(cls, d + "subclasses" + d)()
        """,
        expect=AccessDenied,
    )


# -- function globals, builtins, dicts --------------------------------------------------


def test_function_globals(attempt) -> None:
    attempt(
        """
        def f(): pass
        f.__globals__["__builtins__"]["open"](PATH, "w").write("x")
        """,
        expect=CodeRejected,
    )


def test_builtins_by_name(attempt) -> None:
    attempt('__builtins__["open"](PATH, "w").write("x")', expect=CodeRejected)


def test_instance_dict(attempt) -> None:
    attempt(
        """
        class A: pass
        reached = A().__dict__
        """,
        expect=CodeRejected,
    )


def test_registered_function_globals(attempt) -> None:
    policy = Policy()
    policy.fn(tools.helper)
    attempt("reached = getattr(helper, '__glob' + 'als__')['os']", policy, expect=AccessDenied)


# -- frames through generators, coroutines and tracebacks ---------------------------------


def test_generator_frame(attempt) -> None:
    attempt(
        """
        def g():
            yield 1
        gen = g()
        reached = gen.gi_frame.f_back.f_globals
        """,
        expect=CodeRejected,
    )


def test_generator_frame_computed(attempt) -> None:
    attempt(
        """
        def g():
            yield 1
        gen = g()
        reached = getattr(gen, "gi_" + "frame")
        """,
        expect=AccessDenied,
    )


def test_coroutine_frame(attempt) -> None:
    attempt(
        """
        async def c():
            pass
        co = c()
        try:
            frame = getattr(co, "cr_" + "frame")
        finally:
            co.close()
        reached = getattr(frame, "f_globals")
        """,
        expect=AccessDenied,
    )


def test_async_generator_frame(attempt) -> None:
    attempt(
        """
        async def ag():
            yield 1
        reached = ag().ag_frame
        """,
        expect=CodeRejected,
    )


def test_traceback_frame(attempt) -> None:
    attempt(
        """
        try:
            1 / 0
        except ZeroDivisionError as e:
            reached = e.__traceback__.tb_frame.f_back.f_globals
        """,
        expect=CodeRejected,
    )


def test_traceback_frame_computed(attempt) -> None:
    attempt(
        """
        try:
            1 / 0
        except ZeroDivisionError as e:
            tb = getattr(e, "__trace" + "back__")
            reached = getattr(tb, "tb_" + "frame")
        """,
        expect=AccessDenied,
    )


def test_frame_builtins(attempt) -> None:
    attempt("import sys\nreached = getattr(sys._getframe(), 'f_builtins')", expect=ImportDenied)


# -- str.format traversal -----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        '"{0.__class__.__mro__}".format(1)',
        '"{0.__globals__}".format(lambda: 0)',
        '"{x.__class__}".format_map({"x": 1})',
        'str.format("{0.__class__}", 1)',
        'getattr("{0.__class__}", "format")(1)',
        '"{0.gi_frame}".format((i for i in []))',
        '"{0[0].__class__}".format([1])',
    ],
)
def test_format_traversal(attempt, code) -> None:
    attempt(f"reached = {code}", expect=AccessDenied)


def test_string_formatter_is_unavailable(attempt) -> None:
    attempt(
        """
        import string
        reached = string.Formatter().get_field("0.__class__", [1], {})
        """,
        expect=AttributeError,
    )


# -- getattr / setattr / vars / dir --------------------------------------------------------


def test_setattr_dunder(attempt) -> None:
    attempt(
        """
        class A: pass
        setattr(A, "__reduce__", lambda self: (print, ("x",)))
        """,
        expect=AccessDenied,
    )


def test_vars(attempt) -> None:
    attempt("reached = vars()", expect=CodeRejected)


def test_dir_hides_dunders(tmp_path) -> None:
    sandbox = Sandbox()
    namespace = sandbox.namespace()
    result = sandbox.run("names = dir(lambda: 0) + dir(1) + dir(dir)", namespace)
    assert result.error is None
    assert not [n for n in namespace["names"] if n.startswith("_")]


def test_delattr_on_module(attempt) -> None:
    attempt("import math\ndelattr(math, 'pi')", expect=AccessDenied)


# -- type(), __reduce__, metaclasses ----------------------------------------------------


def test_three_argument_type(attempt) -> None:
    attempt('reached = type("X", (), {"__reduce__": lambda s: (print, ())})', expect=CallDenied)


def test_three_argument_type_through_type_of_a_class(attempt) -> None:
    attempt('reached = type(int)("X", (), {})', expect=CallDenied)


def test_reduce_definition(attempt) -> None:
    attempt(
        """
        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))
        """,
        expect=CodeRejected,
    )


@pytest.mark.parametrize(
    "method",
    [
        "__del__",
        "__init_subclass__",
        "__class_getitem__",
        "__getattribute__",
        "__reduce_ex__",
        "__setstate__",
        "__set_name__",
        "__instancecheck__",
    ],
)
def test_dunder_methods_with_power_over_the_host(attempt, method) -> None:
    attempt(f"class Evil:\n    def {method}(self, *a):\n        pass", expect=CodeRejected)


def test_metaclass_keyword(attempt) -> None:
    attempt("class Evil(metaclass=type):\n    pass", expect=CodeRejected)


def test_deriving_from_type(attempt) -> None:
    attempt("class Meta(type(int)):\n    pass", expect=CallDenied)


def test_class_body_dunder_assignment(attempt) -> None:
    attempt("class A:\n    __getattribute__ = 1", expect=CodeRejected)


def test_faking_the_agent_marker(attempt) -> None:
    policy = Policy()
    policy.cls(tools.Account, exclude=["_*", "close"])
    attempt(
        """
        class Mine(Account):
            __agex_pure__ = True
        Mine("x").close()
        """,
        policy,
        expect=CodeRejected,
    )


# -- the forbidden builtins ---------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "exec('x = 1')",
        "eval('1')",
        "compile('1', 'x', 'eval')",
        "open(PATH, 'w')",
        "breakpoint()",
        "help()",
        "input()",
        "globals()",
        "locals()",
        "__import__('os')",
    ],
)
def test_forbidden_builtins(attempt, call) -> None:
    attempt(f"reached = {call}", expect=CodeRejected)


def test_forbidden_builtins_through_an_attribute(attempt) -> None:
    policy = Policy()
    holder = type("Holder", (), {"loader": staticmethod(open)})
    policy.fn(lambda: holder(), name="get_holder")
    attempt("reached = get_holder().loader(PATH, 'w')", policy, expect=AccessDenied)


# -- imports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.system('touch ' + PATH)",
        "import importlib\nreached = importlib.import_module('os')",
        "import builtins\nbuiltins.open(PATH, 'w')",
        "from os import system",
        "import subprocess",
        "import ctypes",
        "import json.decoder\nreached = json.decoder",
    ],
)
def test_imports(attempt, code) -> None:
    attempt(code, expect=(ImportDenied, CodeRejected))


def test_relative_and_future_imports(attempt) -> None:
    attempt("from . import x", expect=CodeRejected)
    attempt("from __future__ import annotations", expect=CodeRejected)


def test_os_through_a_registered_modules_imports(attempt) -> None:
    policy = Policy()
    policy.module(tools)
    name = tools.__name__
    attempt(f"import {name} as t\nt.os.system('touch ' + PATH)", policy, expect=AttributeError)
    attempt(f"from {name} import sys\nreached = sys", policy, expect=ImportError)
    attempt(f"import {name} as t\nreached = getattr(t, 'o' + 's')", policy, expect=AttributeError)


def test_os_through_stdlib_modules(attempt) -> None:
    attempt("import dataclasses\nreached = dataclasses.sys", expect=AttributeError)
    attempt("import typing\nreached = typing.sys", expect=AttributeError)
    attempt("import random\nreached = random._os", expect=AccessDenied)


def test_real_module_handed_out_by_host_code(attempt) -> None:
    policy = Policy()
    policy.fn(lambda: sys, name="leak")
    attempt("reached = leak().modules", policy, expect=AccessDenied)


def test_modules_cannot_be_modified(attempt) -> None:
    attempt("import math\nmath.pi = 3", expect=AccessDenied)
    import math

    assert math.pi != 3


def test_registered_classes_cannot_be_modified(attempt) -> None:
    policy = Policy()
    policy.cls(tools.Account)
    attempt("Account.balance = lambda self: 0", policy, expect=AccessDenied)
    assert tools.Account("a").balance() == 100


# -- decorators, class bodies, super() ---------------------------------------------------


def test_decorator_reaching_globals(attempt) -> None:
    attempt("@(lambda f: f.__globals__)\ndef g():\n    pass", expect=CodeRejected)


def test_decorator_from_host_cannot_be_used_to_leak(attempt) -> None:
    policy = Policy()
    policy.fn(lambda f: f, name="identity")
    attempt(
        """
        @identity
        def g():
            pass
        reached = g.__code__
        """,
        policy,
        expect=CodeRejected,
    )


@pytest.mark.parametrize(
    "expression",
    [
        "super(int, 1).__class__",
        "super().__reduce_ex__(2)",
        'super().__getattribute__("x")',
        "super(type, int).__subclasses__()",
    ],
)
def test_super_tricks(attempt, expression) -> None:
    attempt(
        f"class A:\n    def f(self):\n        return {expression}\nreached = A().f()",
        expect=CodeRejected,
    )


def test_rebinding_super(attempt) -> None:
    attempt("super = lambda: 1", expect=CodeRejected)


def test_name_mangling_does_not_reach_host_privates(attempt) -> None:
    policy = Policy()
    policy.cls(tools.Account)
    attempt(
        """
        class Account2:
            def peek(self, other):
                return other.__pin
        reached = Account2().peek(Account("a"))
        """,
        policy,
        expect=AccessDenied,
    )


def test_string_annotations_are_checked(attempt) -> None:
    attempt("def f(x: '().__class__.__mro__'):\n    pass", expect=CodeRejected)
    attempt("def f(x: list['__import__(\"os\")']):\n    pass", expect=CodeRejected)


def test_match_class_pattern_attributes(attempt) -> None:
    attempt(
        """
        match 1:
            case object(__class__=c):
                reached = c
        """,
        expect=CodeRejected,
    )


# -- exception attributes ----------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["__traceback__", "__context__", "__cause__"])
def test_exception_dunders(attempt, attribute) -> None:
    attempt(
        f"try:\n    1/0\nexcept Exception as e:\n    reached = e.{attribute}", expect=CodeRejected
    )


def test_exception_from_host_code_carries_no_frames(attempt) -> None:
    policy = Policy()
    policy.fn(lambda: 1 / 0, name="explode")
    attempt(
        """
        try:
            explode()
        except ZeroDivisionError as e:
            tb = getattr(e, "__traceback__")
        """,
        policy,
        expect=AccessDenied,
    )


def test_reserved_names(attempt) -> None:
    attempt("reached = _agex_attr", expect=CodeRejected)
    attempt("_agex_getattr = 1", expect=CodeRejected)


def test_print_to_a_host_file(attempt) -> None:
    attempt("print('x', file=object())", expect=CallDenied)


@pytest.mark.parametrize(
    "code",
    [
        "reached = type(get_account())('agent')",
        "import TOOLS as t\nreached = t.Account('agent')",
        "reached = get_account().open_for.__self__('agent')",
        "reached = [c for c in type(get_account()).mro()][0]('agent')",
    ],
)
def test_not_constructable_stays_so(attempt, code) -> None:
    policy = Policy()
    policy.cls(tools.Account, constructable=False)
    policy.module(tools, exclude=["_*", "os", "sys"])
    policy.fn(lambda: tools.Account("host"), name="get_account")
    attempt(code.replace("TOOLS", tools.__name__), policy, expect=(CallDenied, CodeRejected))
