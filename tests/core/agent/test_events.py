import pytest

from agex import events


def make_all() -> list[events.Event]:
    base = {"agent_name": "a", "session": "s", "step": 2, "commit": "c1"}
    return [
        events.TaskStartEvent(**base, task_name="t", inputs={"x": "1"}),
        events.ActionEvent(**base, thinking="think", code="print(1)"),
        events.OutputEvent(**base, text="1\n"),
        events.ErrorEvent(**base, error="Traceback ..."),
        events.SuccessEvent(**base, result={"k": [1, 2]}),
        events.FailEvent(**base, message="no"),
        events.ClarifyEvent(**base, message="which?"),
        events.CancelledEvent(**base),
        events.ConflictEvent(**base, action="retry", attempt=1, message="moved on"),
    ]


@pytest.mark.parametrize("event", make_all(), ids=lambda e: type(e).__name__)
def test_json_round_trip(event) -> None:
    text = event.to_json()
    assert f'"type": "{type(event).__name__}"' in text
    assert events.Event.from_json(text) == event


def test_every_kind_is_covered() -> None:
    assert {type(e).__name__ for e in make_all()} == set(events.Event.kinds)


def test_events_are_frozen() -> None:
    event = make_all()[0]
    with pytest.raises(AttributeError):
        event.step = 3


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="not an agex event type: 'Nope'"):
        events.Event.from_dict({"type": "Nope"})


def test_jsonable_keeps_json_and_reprs_the_rest() -> None:
    assert events.jsonable({"a": [1, 2.5, None]}) == {"a": [1, 2.5, None]}
    assert events.jsonable({1, 2}) == "{1, 2}"
    assert events.jsonable((1, 2)) == "(1, 2)"  # JSON would turn it into a list
