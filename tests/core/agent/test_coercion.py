import dataclasses
from typing import Any, Literal, Optional

import attrs
import pytest

from agex.coercion import conform


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0


@attrs.define
class Box:
    label: str
    items: list[int]


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (1, int, 1),
        (1, float, 1.0),
        ("a", str, "a"),
        (None, None, None),
        (None, Optional[int], None),  # noqa: UP045 - the typing spelling is what is tested
        (3, int | str, 3),
        ([1, 2], list[float], [1.0, 2.0]),
        ((1, "a"), tuple[int, str], (1, "a")),
        ([1, 2, 3], tuple[int, ...], (1, 2, 3)),
        ({"a": 1}, dict[str, int], {"a": 1}),
        ([1, 1, 2], set[int], {1, 2}),
        ("b", Literal["a", "b"], "b"),
        ({"x": 1}, Point, Point(1, 0.0)),
        (Point(2, 3.0), Point, Point(2, 3.0)),
        ({"label": "l", "items": [1]}, Box, Box("l", [1])),
        ([{"x": 1}], list[Point], [Point(1)]),
        (object, Any, object),
    ],
)
def test_fits(value, annotation, expected) -> None:
    assert conform(value, annotation) == expected


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        ("1", int, "result should be int, got str '1'"),
        (True, int, "should be an int, got a bool"),
        ([1, "x"], list[int], "result[1] should be int"),
        ({"x": "no"}, Point, "result.x should be int"),
        ({"z": 1}, Point, "Point has no field(s) ['z']"),
        ((1,), tuple[int, int], "should have 2 items, got 1"),
        ("c", Literal["a", "b"], "should be one of ['a', 'b']"),
        ([1], dict[str, int], "should be a dict"),
        ("abc", list[str], "should be a list"),
        (1.5, int | str, "fits none of int | str"),
    ],
)
def test_mismatch_explains(value, annotation, message) -> None:
    with pytest.raises(TypeError) as info:
        conform(value, annotation, "result")
    assert message in str(info.value)


def test_pydantic_models_when_installed() -> None:
    pydantic = pytest.importorskip("pydantic")

    class User(pydantic.BaseModel):
        name: str
        age: int

    assert conform({"name": "a", "age": "3"}, User) == User(name="a", age=3)
    with pytest.raises(TypeError, match="not a valid User"):
        conform({"name": "a"}, User)


def test_exact_builtins_come_back() -> None:
    class Str(str):
        pass

    value = conform(Str("x"), str)
    assert type(value) is str


def test_more_annotation_kinds() -> None:
    from typing import NewType, TypedDict

    class Movie(TypedDict):
        title: str
        year: int

    UserId = NewType("UserId", int)
    assert conform({"title": "t", "year": 1999}, Movie) == {"title": "t", "year": 1999}
    with pytest.raises(TypeError, match="missing key"):
        conform({"title": "t"}, Movie)
    assert conform(5, UserId) == 5
    with pytest.raises(TypeError):
        conform("5", UserId)
    with pytest.raises(TypeError):
        conform(True, Literal[1])
