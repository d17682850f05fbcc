"""A task's value crossing back from a remote host cannot run code on the caller: it is
rebuilt with only the classes the task's return annotation names."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import os
import pickle
import pickletools
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pytest

from agex.remote import values
from agex.remote.values import RefusedValue


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Shape:
    name: str
    corners: list[Point]
    made: datetime.datetime | None = None


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Pair(NamedTuple):
    left: Color
    right: Decimal


@attrs.define
class Tagged:
    tag: str
    pair: Pair


def round_trip(value: Any, annotation: Any) -> Any:
    return values.loads(values.dumps(value, annotation), annotation)


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (Point(1, 2), Point),
        (Shape("sq", [Point(0, 0), Point(1, 1)], datetime.datetime(2026, 1, 2)), Shape),
        ([Color.RED, Color.BLUE], list[Color]),
        (Tagged("t", Pair(Color.BLUE, Decimal("1.5"))), Tagged),
        ({"a": (1, 2.5, b"x", {3}, frozenset({4}))}, dict[str, Any]),
        (Point(3, 4), Point | None),
        (None, Point | None),
    ],
)
def test_values_of_the_annotated_classes_round_trip(value: Any, annotation: Any) -> None:
    assert round_trip(value, annotation) == value


def test_a_class_the_far_side_got_by_value_arrives_as_the_callers_own() -> None:
    """A class defined in the caller's script reaches a server by value and cannot be
    imported there; the value still comes back, as an instance of the caller's class."""
    theirs = type("Report", (), {"__module__": "__main__.not_importable"})
    theirs.__qualname__ = "Report"
    mine = type("Report", (), {"__module__": "__main__.not_importable"})
    mine.__qualname__ = "Report"
    sent = theirs()
    sent.total = 3
    got = values.loads(values.dumps(sent, theirs), mine)
    assert type(got) is mine
    assert got.total == 3


def test_a_class_the_annotation_does_not_name_is_refused_with_its_name() -> None:
    data = values.dumps(Point(1, 2), Point)
    with pytest.raises(RefusedValue, match="Point"):
        values.loads(data, int)
    with pytest.raises(RefusedValue, match=r"test_values\.Point"):
        values.loads(pickle.dumps(Point(1, 2)), Any)


class Plant:
    """Unpickling this runs ``os.system``: the proof that a payload was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"echo planted > {self.marker}",))


def hostile_payloads(marker: Path) -> list[bytes]:
    command = f"echo planted > {marker}"
    return [
        pickle.dumps(Plant(marker)),
        pickle.dumps(Plant(marker), protocol=0),
        pickle.dumps(eval, protocol=4),
        b"cbuiltins\neval\n(V__import__('os').system(%r)\ntR." % command.encode(),
        b"ccopyreg\n_reconstructor\n(cos\nsystem\ncbuiltins\nobject\nNtR.",
    ]


def test_payloads_that_would_run_code_are_refused_before_anything_runs(tmp_path) -> None:
    marker = tmp_path / "planted"
    for payload in hostile_payloads(marker):
        with pytest.raises((RefusedValue, pickle.UnpicklingError)):
            values.loads(payload, Any)
        with pytest.raises((RefusedValue, pickle.UnpicklingError)):
            values.loads(payload, Shape)
    assert not marker.exists()
    pickle.loads(hostile_payloads(marker)[0])  # the probe is live
    assert marker.exists()


def test_a_persistent_reference_only_resolves_to_an_annotated_class() -> None:
    class Sneaky(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if obj is Point:
                return ("agex-type", "os", "system")
            return None

    buffer = io.BytesIO()
    Sneaky(buffer, protocol=4).dump(Point(1, 2))
    with pytest.raises(RefusedValue, match="does not name"):
        values.loads(buffer.getvalue(), Point)


def test_the_far_side_sends_annotated_classes_by_reference_not_by_import() -> None:
    ops = [op.name for op, _, _ in pickletools.genops(values.dumps(Point(1, 2), Point))]
    assert "BINPERSID" in ops
    assert "STACK_GLOBAL" not in ops
    assert "GLOBAL" not in ops


def test_a_value_that_cannot_be_sent_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="return annotation names"):
        values.dumps(lambda: 1, Any)


def test_a_tiny_payload_cannot_call_for_an_enormous_value() -> None:
    bombs = [
        b"\x80\x04cbuiltins\nbytearray\nJ\x00\x00\x00@\x85R.",  # bytearray(2**30)
        b"\x80\x04cbuiltins\nbytes\nJ\x00\x00\x00@\x85R.",
        b"\x80\x04cbuiltins\nlist\ncbuiltins\nrange\nJ\x00\x00\x00@\x85R\x85R.",
        b"\x80\x04cfractions\nFraction\nX\x0c\x00\x00\x001e9999999999\x85R.",
    ]
    for bomb in bombs:
        with pytest.raises(RefusedValue):
            values.loads(bomb, Any)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_containers_need_no_names_at_any_protocol(protocol: int) -> None:
    value = {"a": [1, 2.5, "s", b"b", bytearray(b"x"), (1,), {2}, frozenset({3}), None, True]}
    data = pickle.dumps(value, protocol=protocol)
    if protocol >= 5:
        assert values.loads(data, Any) == value
    else:  # bytearray rebuilds by a call below protocol 5: refused, like any call
        with pytest.raises(RefusedValue):
            values.loads(data, Any)


def opcodes(*parts: bytes) -> bytes:
    return b"\x80\x05" + b"".join(parts) + b"."


def test_values_too_deep_or_too_shared_are_refused_before_they_are_built() -> None:
    deep = opcodes(b"\x8f(", b")" + b"\x85" * 200_000, b"\x90")  # a set holding a deep tuple
    shared = b")\x94"  # (), memoized as slot 0
    for level in range(40):  # slot n+1 = (slot n, slot n): 2**40 objects in 0.4 KB
        shared += b"h" + bytes([level]) + b"h" + bytes([level]) + b"\x86\x94"
    dag = opcodes(b"\x8f(", shared, b"\x90")
    memo = opcodes(b"N", b"r" + (2**28).to_bytes(4, "little"))  # LONG_BINPUT 2**28
    for payload, why in [(deep, "deeper"), (dag, "far more objects"), (memo, "out of turn")]:
        with pytest.raises(RefusedValue, match=why):
            values.loads(payload, Any)


def test_safe_types_refuse_arguments_that_cost_more_than_their_bytes() -> None:
    huge = 10**300_000
    data = pickle.dumps(huge, protocol=5)[:-1]
    decimal_of_int = b"\x80\x05cdecimal\nDecimal\n" + data[2:] + b"\x85R."
    deque_of_range = b"\x80\x05ccollections\ndeque\ncbuiltins\nrange\nJ\x00\xe1\xf5\x05\x85R\x85R."
    with pytest.raises(RefusedValue, match="Decimal"):
        values.loads(decimal_of_int, Any)
    with pytest.raises(RefusedValue, match=r"builtins\.range"):
        values.loads(deque_of_range, Any)
    assert round_trip(Decimal("1e999999999"), Decimal) == Decimal("1e999999999")


def test_only_the_classes_a_value_can_hold_are_admitted() -> None:
    from typing import Annotated

    class Marker:
        pass

    assert values.named_types(Annotated[str, Marker]) == []
    assert values.named_types(Any) == []
    assert values.named_types(type[Point]) == [Point]
    for _ in range(200):  # the walk keeps what it saw alive: no id is reused mid-walk
        assert set(values.named_types(Tagged)) == {Tagged, Pair, Color, Decimal}
