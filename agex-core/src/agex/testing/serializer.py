"""The contract every serializer meets."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agex.serializers import Serializer
from agex.testing.provider import ProviderContract

PLAIN_VALUES = [
    None,
    True,
    0,
    -(2**70),
    3.25,
    "",
    "ünïcode ✓",
    b"\x00\xffbytes",
    [1, [2, [3]]],
    (1, "two", 3.0),
    {"a": 1, "nested": {"b": [1, 2]}},
    {1, 2, 3},
]


class SerializerContract(ProviderContract):
    kind: ClassVar[str] = "serializer"

    @pytest.fixture
    def serializer(self, tmp_path: Path) -> Serializer:
        return self.create(tmp_path)  # type: ignore[no-any-return]

    def test_is_a_serializer(self, serializer: Any) -> None:
        assert isinstance(serializer, Serializer)

    @pytest.mark.parametrize("value", PLAIN_VALUES, ids=repr)
    def test_round_trips_plain_data(self, serializer: Serializer, value: Any) -> None:
        data = serializer.dumps(value)
        assert isinstance(data, bytes)
        back = serializer.loads(data)
        assert back == value
        assert type(back) is type(value)

    def test_same_value_same_bytes(self, serializer: Serializer) -> None:
        """Content-addressed state deduplicates by these bytes."""
        value = {"k": [1, 2, 3], "s": "text"}
        assert serializer.dumps(value) == serializer.dumps(value)

    def test_refuses_what_it_cannot_carry(self, serializer: Serializer) -> None:
        with pytest.raises(Exception):  # noqa: B017, PT011 - any clear error will do
            serializer.dumps(threading.Lock())
