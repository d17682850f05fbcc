"""The seams of agex: what a host, a model, a storage and a serializer are, and the plain
data that passes between them.

This module sits at the bottom of agex-core and imports nothing above it, so every layer
(and every plugin) can name these types. Where a type here needs an agent or a task, it
names the part the lower layers rely on (:class:`AgentLike`, :class:`TaskLike`), not the
classes in ``agex.agent`` and ``agex.task``, which are built on top of all this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from agex.events import Event

# -- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateConfig:
    """Made by ``connect_state``; hosts read it to build the storage where the loop runs."""

    type: str
    storage: str | None
    path: str | None
    #: The variables a session starts with (a dict, or a function returning one; see
    #: ``agex.state.config.seed_values``). Not part of what the state is: configurations
    #: that differ only in it compare equal, and keep their state in the same place.
    init: Any = field(default=None, compare=False)


@runtime_checkable
class Storage(Protocol):
    """The few byte-store operations versioned state is built on. Keys are non-empty
    strings, values are bytes. Every storage passes ``agex.testing.StorageContract``."""

    def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None when there is none."""
        ...

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item, or none of them if the write fails."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """Atomically set ``key`` to ``new`` if it holds ``expected`` (None: if it is absent).

        Returns whether it did. This is what moves a session's head safely.
        """
        ...

    def keys(self, prefix: str = "") -> Iterable[str]:
        """Every key that starts with ``prefix``."""
        ...


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back. ``loads(dumps(v))`` must equal ``v``."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# -- models -----------------------------------------------------------------------------


class Message(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


@runtime_checkable
class LLM(Protocol):
    """A model client. It keeps its configuration so that it can be rebuilt wherever the
    loop runs: ``agex.plugins.create("llm", provider, **rest_of_config())``."""

    provider: str
    model: str | None
    #: The keys of ``config()`` that move as the model is used (a scripted model's position):
    #: after a remote run, the caller's model takes the far side's values of these, and of
    #: nothing else.
    resumable: tuple[str, ...] = ()

    def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        """The reply to ``messages``, piece by piece as the model produces it."""
        ...

    def config(self) -> dict[str, Any]:
        """What rebuilds this client elsewhere: provider, model and options, no secrets."""
        ...


# -- what the loop is given -------------------------------------------------------------


class AgentLike(Protocol):
    """What the loop, the prompt, state and tasks rely on of an agent (``agex.agent.Agent``)."""

    @property
    def name(self) -> str: ...

    @property
    def primer(self) -> str: ...

    @property
    def state_config(self) -> StateConfig: ...

    @property
    def host(self) -> Host: ...

    @property
    def llm(self) -> LLM | None: ...

    @property
    def max_iterations(self) -> int: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def policy(self) -> Any:
        """Its registrations: an ``agex.sandbox.Policy`` (a layer above this one)."""
        ...

    @property
    def sandbox(self) -> Any:
        """Where its code runs: an ``agex.sandbox.Sandbox`` (a layer above this one)."""
        ...

    def resolved_llm(self) -> LLM:
        """Its model, the environment's default when it was given none."""
        ...


class TaskLike(Protocol):
    """What the loop and the prompt rely on of a task (``agex.task.Task``)."""

    @property
    def name(self) -> str: ...

    @property
    def func(self) -> Callable[..., Any]: ...

    @property
    def primer(self) -> str:
        """The task's instructions, as the model reads them."""
        ...

    @property
    def returns(self) -> Any: ...

    @property
    def returns_text(self) -> str: ...


class Invocation:
    """One call of a task: which agent, which task, which arguments, in which session.

    ``agent`` is an ``agex.agent.Agent`` and ``task`` an ``agex.task.Task``; they are typed
    loosely because hosts read more of them than :class:`AgentLike` says.
    """

    __slots__ = ("agent", "arguments", "session", "task")

    def __init__(self, agent: Any, task: Any, arguments: dict[str, Any], session: str) -> None:
        self.agent, self.task, self.arguments, self.session = agent, task, arguments, session


#: Longest session name: it names state on disk and travels in URLs.
MAX_SESSION = 200


def check_session(session: object) -> None:
    """A session name is a printable string of at most MAX_SESSION characters."""
    if not isinstance(session, str) or not session:
        raise ValueError(f"session must be a non-empty string, got {session!r}")
    if len(session) > MAX_SESSION or not session.isprintable():
        raise ValueError(
            f"session must be at most {MAX_SESSION} printable characters (no control "
            f"characters or line breaks), got {session[:40]!r}"
            + ("..." if len(session) > 40 else "")
        )


class Sink:
    """Where events and tokens go as they happen: to the caller's callbacks, each called in
    order and, when it is a coroutine function (``async def``), awaited before the run goes
    on, so nothing is dropped and nothing arrives out of order."""

    __slots__ = ("on_event", "on_token")

    def __init__(
        self,
        on_event: Callable[[Event], Any] | None = None,
        on_token: Callable[[str], Any] | None = None,
    ) -> None:
        self.on_event, self.on_token = on_event, on_token

    async def event(self, event: Event) -> None:
        if self.on_event is not None:
            await _settled(self.on_event(event))

    async def token(self, text: str) -> None:
        if self.on_token is not None:
            await _settled(self.on_token(text))


async def _settled(returned: Any) -> None:
    """Await what a callback returned, when it is awaitable (an ``async def`` callback's
    coroutine); a plain callback's return value is ignored."""
    if returned is not None and isawaitable(returned):
        await returned


# -- hosts ------------------------------------------------------------------------------


class Host(Protocol):
    """Where an agent's loop runs. A host gets an invocation and a sink for events and
    tokens, and runs the whole loop. Hosts subclass this class: the methods with a body
    here are optional and their default is what a host that runs the loop in this
    process wants.

    The ``agent`` each method receives is an ``agex.agent.Agent`` (a host may annotate it
    so); it is typed loosely here, where the Agent class is not yet known.
    """

    #: Whether the host sends the agent to run elsewhere (another machine, a container).
    #: A remote host says True; agents on it then refuse what cannot leave this process,
    #: such as live objects registered with ``agent.module(obj, name=...)``.
    ships_agent: bool = False

    def validate(self, agent: Any) -> None:
        """Refuse, at Agent creation, a configuration this host cannot run."""
        ...

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        """Run the whole loop; return the task's value or raise its outcome."""
        ...

    def cancel(self, agent: Any, session: str) -> int:
        """Stop the agent's runs in ``session``; returns how many were stopped."""
        ...

    def dump_config(self) -> dict[str, Any]:
        """What rebuilds this host elsewhere (for sub-agents on a server): plain JSON with
        ``provider`` and the options to pass to that provider's factory, no secrets."""
        ...

    def warmup(self, agent: Any) -> None:
        """Prepare ahead of the agent's first task (e.g. build an image). Default: nothing."""
        return None

    def validate_subagent(self, parent: Any, sub: Any) -> None:
        """Refuse, when ``parent.fn(task)`` registers another agent's task, a pairing this
        host cannot run; it is asked whether it is the parent's host or the sub-agent's.
        Default: accept."""
        return None

    def state_storage(self, agent: Any, session: str) -> Storage | None:
        """The storage where this host keeps the agent's state in ``session``, for
        ``agent.state(session)``. None (the default): this process keeps it, in the
        storages of ``agex.stores.LOCAL``."""
        return None
