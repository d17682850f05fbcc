"""Registrations decide what agent code reaches."""

import pytest

from agex.errors import AccessDenied, CallDenied, ImportDenied
from agex.sandbox import Policy, Sandbox

from . import tools


def outcome(policy: Policy, code: str):
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(code, namespace)
    return result, namespace


def test_registered_function_is_callable_by_name(policy) -> None:
    policy.fn(tools.helper)
    policy.fn(tools.helper, name="twice")
    result, ns = outcome(policy, "x = helper(2) + twice(3)")
    assert result.error is None
    assert ns["x"] == 10


def test_class_members_follow_include_and_exclude(policy) -> None:
    policy.cls(tools.Account, exclude=["_*", "close"])
    result, ns = outcome(policy, "a = Account('ann')\nb = a.balance()\nowner = a.owner")
    assert (result.error, ns["b"], ns["owner"]) == (None, 100, "ann")
    result, _ = outcome(policy, "Account('ann').close()")
    assert isinstance(result.exception, AccessDenied)
    assert "Account.close is not exposed" in result.error


def test_include_list_is_a_whitelist(policy) -> None:
    policy.cls(tools.Account, include=["balance", "owner"])
    assert outcome(policy, "Account('a').balance()")[0].error is None
    result, _ = outcome(policy, "Account.open_for('a')")
    assert isinstance(result.exception, AccessDenied)


def test_subclassing_does_not_escape_the_class_rule(policy) -> None:
    policy.cls(tools.Account, exclude=["_*", "close"])
    result, _ = outcome(policy, "class Mine(Account):\n    pass\nMine('x').close()")
    assert isinstance(result.exception, AccessDenied)


def test_private_members_of_host_objects_stay_hidden(policy) -> None:
    policy.cls(tools.Account)
    result, _ = outcome(policy, "pin = Account('a')._pin")
    assert isinstance(result.exception, AccessDenied)
    assert "private attribute '_pin' of Account object" in result.error
    result, _ = outcome(policy, "pin = getattr(Account('a'), '_' + 'pin', None)")
    assert result.error is None


def test_not_constructable_class(policy) -> None:
    policy.cls(tools.Account, constructable=False)
    policy.fn(lambda: tools.Account("host"), name="get_account")
    result, ns = outcome(policy, "a = get_account()\nok = isinstance(a, Account)\nb = a.balance()")
    assert (result.error, ns["ok"], ns["b"]) == (None, True, 100)
    result, _ = outcome(policy, "Account('agent')")
    assert isinstance(result.exception, CallDenied)
    assert "cannot be constructed" in result.error
    result, _ = outcome(policy, "class Sub(Account):\n    pass")
    assert isinstance(result.exception, CallDenied)
    result, ns = outcome(policy, "a = Account.open_for('via classmethod')")
    assert result.error is None  # its classmethods are its API


def test_module_members_follow_include_and_exclude(policy) -> None:
    policy.module(tools, exclude=["_*", "delete_everything"])
    result, ns = outcome(policy, f"import {tools.__name__} as t\nx = t.helper(4)")
    assert (result.error, ns["x"]) == (None, 8)
    result, _ = outcome(policy, f"import {tools.__name__} as t\nt.delete_everything()")
    assert isinstance(result.exception, AttributeError)
    result, _ = outcome(policy, f"from {tools.__name__} import delete_everything")
    assert isinstance(result.exception, ImportError)


def test_unregistered_import_names_what_is_available(policy) -> None:
    policy.module(tools)
    result, _ = outcome(policy, "import numpy")
    assert isinstance(result.exception, ImportDenied)
    assert "module 'numpy' is not available" in result.error
    assert tools.__name__ in result.error
    assert "math" in result.error


def test_submodules_only_when_registered(policy) -> None:
    result, _ = outcome(policy, "import json\nd = json.decoder")
    assert isinstance(result.exception, AttributeError)
    result, _ = outcome(policy, "import xml.etree.ElementTree")
    assert isinstance(result.exception, ImportDenied)
    policy.module("xml.etree.ElementTree")
    result, ns = outcome(
        policy, "import xml.etree.ElementTree as ET\nroot = ET.fromstring('<a/>').tag"
    )
    assert (result.error, ns["root"]) == (None, "a")


def test_stdlib_members_that_evaluate_code_are_left_out(policy) -> None:
    for code in [
        "from typing import get_type_hints",
        "from functools import singledispatch",
        "from string import Formatter",
        "from dataclasses import make_dataclass",
        "from operator import attrgetter",
    ]:
        result, _ = outcome(policy, code)
        assert isinstance(result.exception, ImportError), code


def test_registration_errors_are_clear() -> None:
    policy = Policy()
    with pytest.raises(TypeError, match="fn\\(\\) registers functions"):
        policy.fn(42)
    with pytest.raises(TypeError, match="cls\\(\\) registers classes"):
        policy.cls(tools.helper)
    with pytest.raises(ValueError, match="cannot be a name in agent code"):
        policy.fn(tools.helper, name="_hidden")


def test_writes_through_an_agent_subclass_follow_the_class_rule(policy) -> None:
    policy.cls(tools.Account, exclude=["_*", "owner"])
    result, _ = outcome(policy, "class Mine(Account):\n    pass\nm = Mine('x')\nm.owner = 'eve'")
    assert isinstance(result.exception, AccessDenied)
    result, _ = outcome(policy, "class Mine(Account):\n    pass\nm = Mine('x')\nm._pin = '0'")
    assert isinstance(result.exception, AccessDenied)


def test_agent_objects_and_registered_classes_take_writes(policy) -> None:
    Config = type("Config", (), {})
    config = Config()
    policy.cls(Config, exclude=["_*", "secret"])
    policy.fn(lambda: config, name="get_config")
    result, ns = outcome(
        policy,
        "class Box:\n    pass\nb = Box()\nb.value, b._hidden = 1, 2\nb.value += 1\n"
        "c = get_config()\nc.retries = 3",
    )
    assert result.error is None
    assert (ns["b"].value, ns["b"]._hidden, config.retries) == (2, 2, 3)
    result, _ = outcome(policy, "get_config().secret = 1")
    assert isinstance(result.exception, AccessDenied)
    assert not hasattr(config, "secret")


@pytest.mark.parametrize(
    "code",
    [
        "get_plain().retries = 3",  # a host object of no registered class
        "import dataclasses\nf = dataclasses.field()\nf.name = 'x'",  # the stdlib's own
        "import functools\nc = functools.cached_property(len)\nc.attrname = 'x'",
        "import datetime\nd = datetime.timedelta(1)\nsetattr(d, 'extra', 1)",
    ],
)
def test_objects_the_agent_did_not_make_take_no_writes(policy, code) -> None:
    plain = type("Plain", (), {})()
    policy.fn(lambda: plain, name="get_plain")
    result, _ = outcome(policy, code)
    assert isinstance(result.exception, AccessDenied), result.error
    assert "registered with the agent" in result.error
    assert vars(plain) == {}
