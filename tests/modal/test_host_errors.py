"""Whatever Modal raises on the caller's side, at whichever point (looking the app up,
deploying it, reading the control Dict, calling the function, mid-stream), and whatever the
container raises, the caller gets the type agex documents, with a message saying what to do:
refused credentials are a PermissionError, Modal's function timeout a TaskTimeout, anything
else a RemoteExecutionError. No Modal exception type reaches the caller."""

from __future__ import annotations

import inspect

import modal
import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError, TaskTimeout
from agex.testing.host import scripted

EXCEPTIONS = modal.exception


def every_modal_error():
    for name, cls in sorted(vars(EXCEPTIONS).items()):
        if inspect.isclass(cls) and issubclass(cls, EXCEPTIONS.Error):
            try:
                yield name, cls("what Modal said")
            except TypeError:
                yield name, cls("what Modal said", "im-123")


ERRORS = list(every_modal_error())


class Raising:
    """A fake Modal method that raises, in both its blocking and its ``.aio`` forms; or,
    for ``remote_gen``, an ``.aio`` stream that first yields ``first``."""

    def __init__(self, exc, first=()):
        self.exc, self.first = exc, list(first)

    def __get__(self, obj, owner=None):
        return self

    def __call__(self, *args, **kwargs):
        raise self.exc

    def aio(self, *args, **kwargs):
        if self.first or kwargs.get("watch") is not None:
            return self._stream()
        return self._raise()

    async def _raise(self):
        raise self.exc

    async def _stream(self):
        for item in self.first:
            yield item
        raise self.exc


def agent_on_modal(steps=("task_success(1)",)):
    agent = Agent(host=connect_host(provider="modal", secrets="llm-keys"), llm=scripted(*steps))

    @agent.task
    def one() -> int:
        """One."""

    return agent, one


def break_at(fake, monkeypatch, point, exc):
    if point == "lookup":
        monkeypatch.setattr(fake.Function, "hydrate", Raising(exc))
    elif point == "deploy":
        monkeypatch.setattr(fake.App, "deploy", Raising(exc))
    elif point == "call":
        monkeypatch.setattr(fake.Function, "remote_gen", Raising(exc))
    elif point == "stream":
        monkeypatch.setattr(fake.Function, "remote_gen", Raising(exc, [("tokens", ["hi"])]))


def documented(exc):
    """The type agex documents for ``exc``, and what its message must say."""
    if isinstance(exc, EXCEPTIONS.AuthError | EXCEPTIONS.PermissionDeniedError):
        return PermissionError, "modal token new"
    if isinstance(exc, EXCEPTIONS.FunctionTimeoutError):
        return TaskTimeout, "timeout="
    return RemoteExecutionError, "To go on, "


#: Where the caller meets Modal before and while a task runs. (It reads nothing from the
#: control Dict: see test_host_trust.py.)
POINTS = ["lookup", "deploy", "call", "stream"]
CASES = [
    pytest.param(point, exc, id=f"{point}-{name}")
    for point in POINTS
    for name, exc in ERRORS
    if not (point == "lookup" and isinstance(exc, EXCEPTIONS.NotFoundError))  # deploys
]


@pytest.mark.parametrize(("point", "exc"), CASES)
def test_every_modal_error_arrives_as_the_documented_type(fake, monkeypatch, point, exc):
    _agent, one = agent_on_modal()
    break_at(fake, monkeypatch, point, exc)
    expected, says = documented(exc)
    tokens = []
    with pytest.raises(expected) as raised:
        one(on_token=tokens.append)
    assert not isinstance(raised.value, EXCEPTIONS.Error)
    assert says in str(raised.value)
    assert "what Modal said" in str(raised.value)
    assert raised.value.__cause__ is exc  # Modal's own error stays at hand
    if point == "stream":
        assert tokens == ["hi"]  # what came before the failure was delivered
    if point in ("lookup", "deploy"):
        assert fake.calls == 0


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (EXCEPTIONS.ConnectionError("Could not connect"), "network connection"),
        (EXCEPTIONS.ImageBuildError("pip install failed", "im-1"), "build log"),
        (EXCEPTIONS.NotFoundError("Secret 'keys' not found"), "modal secret create"),
        (EXCEPTIONS.InvalidError("Unsupported Python version"), "the Python version"),
        (EXCEPTIONS.VersionError("too old"), "upgrade the Modal client"),
        (EXCEPTIONS.ResourceExhaustedError("slow down"), "quota or rate limit"),
        (EXCEPTIONS.InternalError("oops"), "status.modal.com"),
    ],
)
def test_a_failed_deploy_says_what_to_do(fake, monkeypatch, exc, says):
    agent, one = agent_on_modal()
    monkeypatch.setattr(fake.App, "deploy", Raising(exc))
    with pytest.raises(RemoteExecutionError, match="deploying app") as raised:
        agent.warmup()
    assert says in str(raised.value)
    with pytest.raises(RemoteExecutionError, match="deploying app"):
        one()
    assert fake.deploys == []


def test_the_app_deploys_after_a_failed_deploy(fake, monkeypatch):
    _agent, one = agent_on_modal(["task_success(1)"])
    monkeypatch.setattr(fake.App, "deploy", Raising(EXCEPTIONS.ConnectionError("down")))
    with pytest.raises(RemoteExecutionError, match="network connection"):
        one()
    monkeypatch.undo()
    assert one() == 1  # nothing of the failure was kept


def test_an_exception_the_container_raises_keeps_its_traceback(fake, monkeypatch):
    def fails():
        raise ValueError("deep in the container")

    monkeypatch.setattr(fake.Function, "remote_gen", Raising(_raised(fails)))
    _agent, one = agent_on_modal()
    with pytest.raises(RemoteExecutionError, match="deep in the container") as raised:
        one()
    assert raised.value.remote_type == "ValueError"
    assert "in fails" in raised.value.remote_traceback


def _raised(func):
    try:
        func()
    except Exception as exc:
        return exc
    raise AssertionError("it did not raise")


def test_a_modal_failure_in_the_container_before_the_task_starts(fake_threads, monkeypatch):
    fake = fake_threads  # it patches code that runs in the container
    """The disk tier's Volume cannot be reloaded: the run ends with an error saying so."""
    monkeypatch.setattr(fake.Volume, "reload", Raising(EXCEPTIONS.ConnectionError("gone")))
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=connect_state(type="versioned", storage="disk", path="faulty"),
        llm=scripted("task_success(1)"),
    )

    @agent.task
    def one() -> int:
        """One."""

    with pytest.raises(RemoteExecutionError, match=r"could not start the task.*gone") as raised:
        one()
    assert "Run the task again" in str(raised.value)
    assert "ConnectionError" in raised.value.remote_traceback


@pytest.mark.parametrize(("name", "exc"), ERRORS, ids=[name for name, _ in ERRORS])
def test_cancel_reports_modal_errors_as_documented(fake, monkeypatch, name, exc):
    agent, _one = agent_on_modal()
    monkeypatch.setattr(fake.Dict, "put", Raising(exc))
    expected, says = documented(exc)
    with pytest.raises(expected, match="asking the runs") as raised:
        agent.host.cancel(agent, "default")
    assert says in str(raised.value)
