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


# numpy arrays and pandas Series and DataFrames cross as plain data the loader rebuilds itself.


def forged(*pids: Any) -> bytes:
    """A pickle of a list whose items are the persistent ids given: what a hostile far side
    sends in place of an array's or a frame's plain form."""
    slots = [object() for _ in pids]
    by_slot = {id(slot): pid for slot, pid in zip(slots, pids, strict=True)}

    class Forger(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return by_slot.get(id(obj))

    buffer = io.BytesIO()
    Forger(buffer, protocol=5).dump(slots)
    return buffer.getvalue()


def test_arrays_of_the_listed_dtypes_and_any_shape_round_trip() -> None:
    np = pytest.importorskip("numpy")
    arrays = [
        np.arange(6, dtype=np.int64).reshape(2, 3),
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(12, dtype=">i4").reshape(3, 4).T,  # big-endian, not C order
        np.array(3.5),  # 0-d
        np.zeros((0, 4), dtype=np.float32),
        np.array([], dtype=np.int16),
        np.array([True, False, True]),
        np.array([1 + 2j, np.nan], dtype=np.complex64),
        np.array([np.inf, -0.0, np.nan], dtype=np.float16),
        np.array(["ab", "c", "", "é😀"]),
        np.array([b"x", b"yz"]),
        np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"),
        np.array([1, 2], dtype="timedelta64[ns]"),
    ]
    for array in arrays:
        got = round_trip(array, np.ndarray)
        assert type(got) is np.ndarray
        assert (got.dtype, got.shape) == (array.dtype, array.shape)
        assert got.tobytes() == array.tobytes()  # bit for bit, NaN and NaT included
        assert got.flags.writeable  # its own memory, not a view of the payload's bytes
    assert round_trip({"a": [arrays[0]]}, dict[str, list[np.ndarray]])["a"][0].sum() == 15


def test_a_typed_array_annotation_admits_the_array_and_nothing_its_parameters_name() -> None:
    np = pytest.importorskip("numpy")
    import numpy.typing as npt

    assert values.named_types(npt.NDArray[np.float64]) == [np.ndarray]
    got = round_trip(np.ones(3), npt.NDArray[np.float64])
    assert np.array_equal(got, np.ones(3))


def sample_frame() -> Any:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(
        {
            "int": [1, 2, 3],
            "float": [1.5, float("nan"), -2.0],
            "bool": [True, False, True],
            "str": ["a", None, "c"],
            "when": pd.to_datetime(["2024-01-01", "2024-02-01", None]),
            "took": pd.to_timedelta([1, 2, 3], unit="s"),
            "objects": [{"k": 1}, [1, 2], Decimal("1.5")],
            "kind": pd.Categorical(["x", "y", "x"], ordered=True),
        },
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )


def test_dataframes_and_series_round_trip_with_their_dtypes_and_labels() -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = sample_frame()
    pd.testing.assert_frame_equal(round_trip(frame, pd.DataFrame), frame)
    others = [
        pd.DataFrame(),
        pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(10, 14, 2, name="even")),
        pd.DataFrame(np.arange(6).reshape(2, 3)),  # integer column labels
        pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),  # duplicate labels
        pd.DataFrame(
            {"v": [1.0, 2.0]},
            index=pd.MultiIndex.from_tuples([(1, "a"), (1, "b")], names=["n", "s"]),
        ),
        pd.DataFrame({"s": pd.array(["a", None], dtype="string")}),
        pd.DataFrame({"o": np.array(["a", "b"], dtype=object)}),  # stays object, not text
    ]
    for other in others:
        pd.testing.assert_frame_equal(round_trip(other, pd.DataFrame), other)
    series = [
        pd.Series([1, 2, 3], name="n"),
        pd.Series(["x", "y"], index=pd.Index([1.5, 2.5], name="at"), name=("a", 1)),
        pd.Series(pd.to_datetime(["2024-01-01"]), index=pd.DatetimeIndex(["2024-05-01"])),
        pd.Series([], dtype=float),
    ]
    for one in series:
        pd.testing.assert_series_equal(round_trip(one, pd.Series), one)
    row = pd.DataFrame({"i": [1], "f": [2.5]}, index=pd.Index([10])).iloc[0]
    got = round_trip(row, pd.Series)  # named by a numpy integer, holding numpy scalars
    assert type(got.name) is int
    assert got.to_dict() == {"i": 1, "f": 2.5}


def test_frames_round_trip_nested_in_containers_and_dataclasses() -> None:
    pd = pytest.importorskip("pandas")
    frame = sample_frame()
    got = round_trip({"a": frame, "b": frame["int"]}, dict[str, pd.DataFrame | pd.Series])
    pd.testing.assert_frame_equal(got["a"], frame)
    pd.testing.assert_series_equal(got["b"], frame["int"])
    table = dataclasses.make_dataclass("Table", [("name", str), ("frame", pd.DataFrame)])
    got = round_trip(table("t", frame), table)
    assert got.name == "t"
    pd.testing.assert_frame_equal(got.frame, frame)
    points = pd.DataFrame({"p": [Point(1, 2), None]})  # an object column's values load as any
    pd.testing.assert_frame_equal(round_trip(points, list[Point] | pd.DataFrame), points)
    with pytest.raises(RefusedValue, match=r"test_values\.Point"):
        values.loads(values.dumps(points, pd.DataFrame), pd.DataFrame)


def test_arrays_and_frames_load_only_where_the_annotation_names_them() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    frame, array = sample_frame(), np.arange(3)
    for annotation in (Any, Point, dict[str, Any], pd.Series, np.ndarray):
        with pytest.raises(RefusedValue, match=r"pandas\.DataFrame.*does not name"):
            values.loads(values.dumps(frame, pd.DataFrame), annotation)
    for annotation in (Any, list[int], pd.DataFrame):
        with pytest.raises(RefusedValue, match=r"numpy\.ndarray.*does not name"):
            values.loads(values.dumps(array, np.ndarray), annotation)


def test_the_far_side_sends_arrays_and_frames_as_data_naming_nothing() -> None:
    np = pytest.importorskip("numpy")
    value = {"frame": sample_frame().drop(columns="objects"), "array": np.arange(3)}
    ops = {op.name for op, _, _ in pickletools.genops(values.dumps(value, Any))}
    assert "BINPERSID" in ops
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD"}


def test_numpys_and_pandas_own_pickles_are_refused_naming_what_they_call() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    reconstruct = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R."
    )
    block = b"\x80\x02cpandas._libs.internals\n_unpickle_block\n)R."
    new = b"\x80\x02cpandas\nDataFrame\n)\x81}b."  # the class itself, to be built by hand
    cases = [
        (reconstruct, np.ndarray, r"numpy\.core\.multiarray\._reconstruct"),
        (pickle.dumps(np.arange(3)), np.ndarray, r"numpy\._core\.\w+\._\w+"),
        (block, pd.DataFrame, r"pandas\._libs\.internals\._unpickle_block"),
        (new, pd.DataFrame, r"pandas\.DataFrame"),
        (pickle.dumps(sample_frame()), pd.DataFrame, r"pandas"),
        (pickle.dumps(pd.Series([1])), pd.Series, r"pandas"),
    ]
    for payload, annotation, name in cases:
        with pytest.raises(RefusedValue, match=name) as refused:
            values.loads(payload, annotation)
        assert "plain form" in str(refused.value)


def test_forged_arrays_are_refused_before_numpy_allocates_them() -> None:
    np = pytest.importorskip("numpy")
    cases = [
        (("agex-ndarray", "<f8", (10**9,), b"\x00" * 8), "carries 8 bytes"),
        (("agex-ndarray", "<f8", (2**32, 2**32), b""), "carries 0 bytes"),
        (("agex-ndarray", "|O", (1,), b"\x00" * 8), r"dtype '\|O'"),
        (("agex-ndarray", "|V8", (1,), b"\x00" * 8), r"dtype '\|V8'"),
        (("agex-ndarray", "<f16", (1,), b"\x00" * 16), "dtype '<f16'"),
        (("agex-ndarray", "<M8", (1,), b"\x00" * 8), "dtype '<M8'"),
        (("agex-ndarray", "<U0", (3,), b""), "dtype '<U0'"),
        (("agex-ndarray", "<U999999999", (0,), b""), "dtype '<U999999999'"),
        (("agex-ndarray", ">U1", (2,), b"\x00\x00\x00a\x00\x11\x00\x00"), "beyond Unicode"),
        (("agex-ndarray", str(np.dtype([("a", "O")]).descr), (1,), b"\x00" * 8), "dtype"),
        (("agex-ndarray", "<i8", [1], b"\x00" * 8), "malformed"),
        (("agex-ndarray", "<i8", (True,), b"\x00" * 8), "malformed"),
        (("agex-ndarray", "<i8", (-1,), b""), "malformed"),
        (("agex-ndarray", "<i8", (1,) * 65, b"\x00" * 8), "malformed"),
        (("agex-ndarray", "<i8"), "malformed"),
    ]
    for pid, why in cases:
        with pytest.raises(RefusedValue, match=why):
            values.loads(forged(pid), list[np.ndarray])
    got = values.loads(forged(("agex-ndarray", "|b1", (2,), b"\x00\x07")), list[np.ndarray])
    assert got[0].view(np.uint8).tolist() == [0, 1]  # a bool array holds only 0 and 1


def test_the_same_bytes_used_over_and_over_cannot_build_more_than_the_value_holds() -> None:
    np = pytest.importorskip("numpy")
    pid = ("agex-ndarray", "|u1", (100_000,), bytes(100_000))
    payload = forged(*[pid] * 50)  # one memoized form, rebuilt 50 times
    assert len(payload) < 101_000
    with pytest.raises(RefusedValue, match="more than its bytes"):
        values.loads(payload, list[np.ndarray])
    assert len(values.loads(forged(pid), list[np.ndarray])) == 1


def test_forged_frames_are_refused() -> None:
    pd = pytest.importorskip("pandas")
    ints = ("array", "<i8", (2,), b"\x00" * 16)
    floats = ("array", "<f8", (2,), b"\x00" * 16)
    rows, none = ("range", 0, 2, 1, None), ("range", 0, 0, 1, None)
    cases = [
        (("agex-frame", [], ("range", 0, 10**15, 1, None), none), "far longer"),
        (("agex-series", ("objects", "object", []), ("range", 0, 10**12, 1, None), None), "far"),
        (("agex-frame", [ints], ("range", 0, 3, 1, None), ("range", 0, 1, 1, None)), "match"),
        (("agex-frame", [ints], rows, none), "match"),
        (("agex-frame", [("objects", "str", ["a", 1])], rows, none), "other than text"),
        (("agex-frame", [("objects", "pickle", [])], rows, none), "malformed"),
        (("agex-frame", [("array", "<i8", (1, 2), b"\x00" * 16)], rows, none), "dimension"),
        (("agex-series", ("category", floats, ints, True), rows, None), "codes"),
        (("agex-series", ("category", ints, ints, True), rows, None), "must be unique"),
        (
            ("agex-series", ("category", ints, ("category", ints, ints, True), True), rows, None),
            "not a column",
        ),
        (("agex-series", ints, ("multi", [ints], []), None), "multi-index"),
        (("agex-series", ints, ("range", 0, 2, 0, None), None), "range index"),
        (("agex-series", ints, rows, ["unhashable"]), "could not be rebuilt"),
        (("agex-frame", "columns", rows, none), "columns"),
    ]
    for pid, why in cases:
        with pytest.raises(RefusedValue, match=why):
            values.loads(forged(pid), list[pd.DataFrame | pd.Series])
    out_of_range = ("array", "|i1", (2,), b"\x00\x05")
    categories = ("objects", "object", ["a"])
    bad_codes = ("agex-series", ("category", out_of_range, categories, False), rows, None)
    with pytest.raises(RefusedValue, match=r"could not be rebuilt.*ValueError"):
        values.loads(forged(bad_codes), list[pd.Series])


def test_arrays_and_columns_that_do_not_cross_are_refused_saying_what_to_do() -> None:
    """On the far side, as the value is sent: the caller would refuse them anyway."""
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    cases = [
        (np.array([object()], dtype=object), r"dtype object.*\.tolist\(\)"),
        (np.zeros(1, dtype=[("a", "O")]), r"dtype \[\('a', 'O'\)\]"),
        (np.ma.masked_array([1]), r"numpy\.ma.*MaskedArray.*numpy\.asarray"),
        (pd.DataFrame({"x": pd.array([1, None], dtype="Int64")}), r"column 'x'.*Int64.*float64"),
        (pd.Series(pd.to_datetime(["2020"]).tz_localize("UTC")), r"UTC.*tz_convert\(None\)"),
        (pd.Series([1], index=pd.PeriodIndex(["2020"], freq="M")), r"index.*period.*astype"),
    ]
    for value, why in cases:
        with pytest.raises(TypeError, match=why):
            values.dumps(value, Any)


def test_the_loader_imports_neither_numpy_nor_pandas_for_values_without_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from agex.remote import values\n"
        "data = values.dumps({'a': (1, 2.5, Decimal('1'))}, dict)\n"
        "values.loads(data, dict)\n"
        "print(sorted({'numpy', 'pandas'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "from decimal import Decimal\n" + code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


@pytest.mark.parametrize(
    "target",
    [
        _global("collections", "Counter"),  # admitted for every annotation
        _global("builtins", "complex"),
        pickle.EMPTY_DICT,
        pickle.EMPTY_LIST,
    ],
)
def test_state_is_set_only_on_objects_the_bytes_made(target) -> None:
    """BUILD on a class would set its attributes for the whole process, before any check."""
    import collections

    before = collections.Counter.most_common
    crafted = (
        pickle.PROTO
        + b"\x04"
        + target
        + pickle.NONE
        + pickle.MARK
        + pickle.SHORT_BINUNICODE
        + bytes([11])
        + b"most_common"
        + _global("builtins", "complex")
        + pickle.DICT
        + pickle.TUPLE2
        + pickle.BUILD
        + pickle.POP
        + pickle.BININT1
        + b"\x07"
        + pickle.STOP
    )
    with pytest.raises(values.RefusedValue, match="set state on something no call made"):
        values.loads(crafted, int)
    assert collections.Counter.most_common is before
