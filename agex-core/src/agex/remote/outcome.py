"""How a run's end travels back to its caller, as plain data, and becomes the task's value or
its exception there.

A value goes as JSON when JSON carries it exactly; otherwise pickled so that the caller
rebuilds it with only the classes the task's return annotation names
(:mod:`agex.remote.values`), with an HMAC under the key both sides share. An error goes as
its type's name and its message: the errors a task call raises as it ends (:data:`TYPED`)
are raised again as their own type with the same ``.message``, as a local run raises them;
anything else becomes a :class:`~agex.errors.RemoteExecutionError` carrying the remote
traceback. No error is unpickled: the far side only picks one of these types by name.

An outcome also carries the configuration the model ended the run with, so a model whose
configuration moves as it is used (the scripted model's position) continues from there: only
in the keys the model declares ``resumable``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from agex.coercion import conform
from agex.errors import AgexError, RemoteExecutionError
from agex.remote import values

if TYPE_CHECKING:
    from agex.protocols import AgentLike as Agent
    from agex.protocols import Invocation, Sink

#: The errors the caller raises as their own type, as a local run would: the task's own ends,
#: a session another run moved on, a model out of reach. Anything else is a
#: RemoteExecutionError. Each is built from its message alone.
TYPED = (
    "TaskFail",
    "TaskClarify",
    "TaskTimeout",
    "TaskCancelled",
    "StateConflict",
    "SessionInUse",
    "LLMError",
)
#: Nesting beyond which a value is serialized rather than sent as JSON.
_JSON_DEPTH = 64


def success(value: Any, returns: Any, key: str | None, model: Any = None) -> dict[str, Any]:
    """The outcome of a run that returned ``value``, for a task whose return annotation is
    ``returns``; without ``key`` (a worker, which holds none) unsealed, see :func:`seal`."""
    outcome: dict[str, Any] = {"kind": "result"}
    if plain(value):
        outcome["json"] = value
    else:
        data = values.dumps(value, returns)
        outcome["pickle"] = base64.b64encode(data).decode()
        if key is not None:
            outcome["mac"] = _mac(key, data)
    return with_model(outcome, model)


def failure(exc: BaseException, model: Any = None) -> dict[str, Any]:
    """The outcome of a run that raised ``exc``: its type's name, its message as given
    (``.message``: the text agent code passed to ``task_fail``, not decorated), and the
    traceback, for an error the caller cannot raise as its own type."""
    import traceback

    outcome = {
        "kind": "error",
        "type": type(exc).__name__,
        "message": exc.message if isinstance(exc, AgexError) else str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return with_model(outcome, model)


async def deliver(kind: str, data: Any, sink: Sink) -> dict[str, Any] | None:
    """Hand one message from the far side to the caller's callbacks; the outcome, when the
    message is the last one."""
    from agex.events import Event

    if kind == "tokens":
        for text in data:
            await sink.token(text)
    elif kind == "event":
        try:
            event = Event.from_json(data)
        except (TypeError, ValueError, RecursionError) as exc:
            # What the far side sent is refused, not shown: the run cannot be followed.
            raise RemoteExecutionError(
                f"the server sent a malformed event ({exc}); the server and this client may "
                "run different agex versions, or something altered the stream"
            ) from None
        await sink.event(event)
    elif kind in ("result", "error"):
        if not isinstance(data, dict):
            raise RemoteExecutionError("the run's outcome is malformed")
        return data
    return None


def seal(outcome: dict[str, Any], key: str) -> dict[str, Any]:
    """``outcome`` (from a worker, which holds no key) with the HMAC a caller checks."""
    if "pickle" in outcome:
        outcome = {**outcome, "mac": _mac(key, _pickled(outcome, None))}
    return outcome


def verified(outcome: dict[str, Any], key: str) -> dict[str, Any]:
    """``outcome`` after its HMAC is checked, without it: for a worker process to load (a
    sub-agent's value), which holds no key."""
    if "pickle" not in outcome:
        return outcome
    _pickled(outcome, key)
    return {k: v for k, v in outcome.items() if k != "mac"}


#: The outcome of a run that gave up on its session (``on_conflict="abandon"``): the task
#: returns None, whatever its return annotation.
ABANDONED_OUTCOME = {"kind": "abandoned"}


def settle(outcome: dict[str, Any], invocation: Invocation, key: str | None) -> Any:
    """The task's value, or its exception raised: on the caller's side, from the outcome the
    far side sent. A value JSON cannot carry is loaded only when its HMAC under ``key``
    matches (``None``: the outcome came over a channel that needs none, from a worker
    process of this one), and then only with the classes the task's return annotation
    names (:mod:`agex.remote.values`): what the far side sends cannot run code here."""
    _resume(invocation.agent, outcome.get("model"))
    if outcome.get("kind") == "abandoned":
        return None
    if outcome.get("kind") == "result":
        returns = invocation.task.returns
        value = _value(outcome, returns, key)
        try:  # what the far side says it returned is checked as the local loop checks it
            return conform(value, returns, f"the value {invocation.task.name} returned")
        except TypeError as exc:
            raise RemoteExecutionError(f"the run's result does not fit: {exc}") from None
    from agex import errors

    kind = outcome.get("type")
    text = str(outcome.get("message", ""))
    if kind in TYPED:
        raise getattr(errors, str(kind))(text)
    traceback = outcome.get("traceback")
    raise RemoteExecutionError(
        f"{kind}: {text}",
        remote_traceback=traceback if isinstance(traceback, str) else None,
        remote_type=str(kind),
    )


def _value(outcome: dict[str, Any], returns: Any, key: str | None) -> Any:
    if "json" in outcome:
        return outcome["json"]
    data = _pickled(outcome, key)
    try:
        return values.loads(data, returns)
    except values.RefusedValue as exc:
        raise RemoteExecutionError(f"the run's result was refused: {exc}") from None
    except Exception as exc:
        raise RemoteExecutionError(
            f"the run's result could not be rebuilt: {type(exc).__name__}: {exc}"
        ) from None


def with_model(outcome: dict[str, Any], model: Any) -> dict[str, Any]:
    if model is not None:
        outcome["model"] = model.config()
    return outcome


def _resume(agent: Agent, config: Any) -> None:
    """Continue with the model as the run left it: only the configuration keys the model
    names as moving with use (``resumable``, e.g. the scripted model's position), only with
    values of the type they have here. The far side chooses nothing else of the caller's
    model (not its endpoint, not its options)."""
    llm = agent.llm
    if llm is None or not isinstance(config, dict) or config.get("provider") != llm.provider:
        return
    for name in getattr(type(llm), "resumable", ()):
        value, current = config.get(name), getattr(llm, name, None)
        if type(value) is type(current):
            setattr(llm, name, value)


def plain(value: Any, depth: int = 0) -> bool:
    """True when JSON carries ``value`` exactly: plain types only, no subclasses."""
    if depth > _JSON_DEPTH:
        return False
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if kind is list:
        return all(plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and plain(v, depth + 1) for k, v in value.items())
    return False


def _pickled(outcome: dict[str, Any], key: str | None) -> bytes:
    """The pickled value an outcome carries, its HMAC under ``key`` checked (None: none
    expected)."""
    try:
        data = base64.b64decode(outcome["pickle"], validate=True)
        given = outcome["mac"] if key is not None else None
    except (KeyError, TypeError, ValueError):
        raise RemoteExecutionError("the run's result is malformed") from None
    if key is not None:
        _check_mac(given, key, data)
    return data


def _check_mac(given: Any, key: str, data: bytes) -> None:
    if (
        not isinstance(given, str)
        or not given.isascii()
        or not hmac.compare_digest(given, _mac(key, data))
    ):
        raise RemoteExecutionError(
            "the run's result failed its HMAC check and was not loaded: the host does not "
            "share this client's key (token), or something altered the result"
        )


def _mac(key: str, data: bytes) -> str:
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()
