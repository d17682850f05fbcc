"""The contract suites must catch broken providers, or passing them proves nothing.

Each case runs the real suite, in a child pytest, against a storage or serializer with one
deliberate bug, and checks that exactly the tests guarding that behaviour fail.
"""

import pytest

STORAGE_BUGS = {
    # A compare_and_set that never looks at `expected`.
    "blind_cas": (
        """
    def compare_and_set(self, key, expected, new):
        self.put_many({key: new})
        return True
        """,
        {
            "test_compare_and_set_creates_only_when_absent",
            "test_compare_and_set_swaps_only_on_match",
            "test_compare_and_set_on_absent_with_expected_value",
            "test_compare_and_set_has_one_winner",
            "test_a_task_moves_the_session_only_when_it_finishes",
        },
    ),
    # A compare_and_set that checks, then sets, without holding the lock in between.
    "racy_cas": (
        """
    def compare_and_set(self, key, expected, new):
        if self._data.get(key) != expected:
            return False
        time.sleep(0.001)
        self._data[key] = new
        return True
        """,
        {
            "test_compare_and_set_has_one_winner",
            "test_increments_are_not_lost",
            "test_a_sessions_turn_has_one_holder_at_a_time",
        },
    ),
    # keys() that ignores the prefix.
    "keys_ignore_prefix": (
        """
    def keys(self, prefix=""):
        return list(self._data)
        """,
        {"test_keys_by_prefix", "test_prefix_is_literal"},
    ),
    # put_many that writes item by item, so a bad item leaves the good ones behind.
    "partial_batch": (
        """
    def put_many(self, items):
        for key, value in items.items():
            self._data[check_key(key)] = check_value(key, value)
        """,
        {"test_bad_batch_writes_nothing"},
    ),
    # get() that turns an empty value into "missing".
    "empty_is_missing": (
        """
    def get(self, key):
        return self._data.get(check_key(key)) or None
        """,
        {"test_empty_value_is_not_missing"},
    ),
}

STORAGE_MODULE = """
import time
from agex import hookimpl
from agex.storage import check_key, check_value
from agex.storage.memory import MemoryStorage
from agex.testing import StorageContract


class Buggy(MemoryStorage):
{override}


class Plugin:
    @hookimpl
    def agex_register_storages(self, registry):
        registry.register("buggy", Buggy)


import pytest

@pytest.fixture(autouse=True)
def _buggy(register_plugin):
    register_plugin(Plugin(), name="buggy-plugin")


class TestBuggy(StorageContract):
    provider = "buggy"
"""


def failed_tests(result) -> set[str]:
    return {r.nodeid.split("::")[-1].split("[")[0] for r in result.listoutcomes()[2]}


@pytest.mark.parametrize("bug", sorted(STORAGE_BUGS))
def test_storage_contract_catches(pytester, bug) -> None:
    override, expected = STORAGE_BUGS[bug]
    pytester.makepyfile(test_buggy=STORAGE_MODULE.format(override=override))
    result = pytester.inline_run("-p", "no:cacheprovider")
    assert failed_tests(result) == expected


def test_storage_contract_passes_a_correct_storage(pytester) -> None:
    pytester.makepyfile(test_buggy=STORAGE_MODULE.format(override="    pass"))
    result = pytester.inline_run("-p", "no:cacheprovider")
    passed, _, failed = result.listoutcomes()
    assert failed == []
    assert len(passed) >= 15


SERIALIZER_MODULE = """
import json, pytest
from agex import hookimpl
from agex.testing import SerializerContract


class Lossy:
    def dumps(self, value):
        return json.dumps(value, default=str).encode()

    def loads(self, data):
        return json.loads(data)


class Plugin:
    @hookimpl
    def agex_register_serializers(self, registry):
        registry.register("lossy", Lossy)


@pytest.fixture(autouse=True)
def _lossy(register_plugin):
    register_plugin(Plugin(), name="lossy-plugin")


class TestLossy(SerializerContract):
    provider = "lossy"
"""


def test_serializer_contract_catches_a_lossy_serializer(pytester) -> None:
    pytester.makepyfile(test_lossy=SERIALIZER_MODULE)
    result = pytester.inline_run("-p", "no:cacheprovider")
    failed = {r.nodeid.split("::")[-1] for r in result.listoutcomes()[2]}
    # JSON turns tuples into lists, bytes and sets and locks into strings.
    assert "test_refuses_what_it_cannot_carry" in failed
    assert any("(1, 'two', 3.0)" in f for f in failed)
    assert any("{1, 2, 3}" in f for f in failed)
    assert not any("'ünïcode ✓'" in f for f in failed)
