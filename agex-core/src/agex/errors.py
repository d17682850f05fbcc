"""The exceptions agex raises, in one place so callers can catch them by type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agex.printable import visible


class AgexError(Exception):
    """Base of every error agex raises on purpose.

    Its text often comes from agent code or a far side (a ``task_fail`` message, a server's
    traceback), and an uncaught error is printed on the caller's terminal: ``str()`` shows
    control and format characters as escapes (``agex.printable``); ``.message`` keeps the
    text exactly as given."""

    def __str__(self) -> str:
        return visible(super().__str__())

    @property
    def message(self) -> str:
        """The text the error was raised with, as given (what agent code passed to
        ``task_fail``, say): no traceback, no decoration added when it is shown."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled without calling __init__ again, whose parameters differ from ``args``: an
        # error raised where a task runs (a container, a worker) reaches its caller intact.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[AgexError], args: tuple[Any, ...], state: dict[str, Any]) -> AgexError:
    # ``args`` go to __new__ too: an OSError (TaskTimeout is a TimeoutError) takes them
    # there, unless its class defines __init__.
    error = cls.__new__(cls, *args)
    builtin = next(base for base in cls.__mro__ if base.__module__ == "builtins")
    builtin.__init__(error, *args)  # type: ignore[misc]
    error.__dict__.update(state)
    return error


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded, or a plugin setting names nothing installed."""


class ProviderError(AgexError):
    """A provider name could not be turned into exactly one provider."""


class UnknownProviderError(ProviderError, ValueError):
    """No installed plugin registers a provider of that kind under that name."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = name


class ProviderNotInstalledError(ProviderError, ImportError):
    """The provider is ours, but the distribution that supplies it is not installed.

    It is an ImportError, so code that already guards optional imports catches it.
    """

    def __init__(self, kind: str, name: str, distribution: str, install: str) -> None:
        super().__init__(
            f"{kind} provider {name!r} is supplied by {distribution}, which is not installed. "
            f"Install it with: {install}",
            name=distribution.replace("-", "_"),
        )
        self.kind = kind
        self.provider = name
        self.distribution = distribution
        self.install = install


class DuplicateProviderError(ProviderError):
    """Two plugins registered the same provider name; agex will not guess which one you meant."""

    def __init__(self, kind: str, name: str, sources: Sequence[str]) -> None:
        both = " and ".join(sources)
        super().__init__(
            f"{kind} provider {name!r} is registered by {both}. Uninstall one of them, or "
            f"turn one off with AGEX_DISABLE_PLUGINS=<distribution>."
        )
        self.kind = kind
        self.provider = name
        self.sources = tuple(sources)


class ProviderOptionError(ProviderError, TypeError, ValueError):
    """The options given to a provider do not fit its factory: one it requires is missing
    (``missing``), or one it does not take was given (``unknown``, misspelt or meant for
    another provider). ``accepted`` names what it takes (None: anything).

    A TypeError, as Python's own error for a call with the wrong keywords, so code written
    for that still catches it; and a ValueError, as for any other bad setting.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        message: str,
        missing: Sequence[str] = (),
        unknown: Sequence[str] = (),
        accepted: Sequence[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = name
        self.missing = tuple(missing)
        self.unknown = tuple(unknown)
        self.accepted = None if accepted is None else tuple(accepted)


class RebuildError(ProviderError):
    """A host or model could not be built again, from its configuration, where its agent was
    sent (the provider is missing there, or its configuration does not rebuild it)."""


class SandboxError(AgexError):
    """Agent code was refused, or could not finish."""


class CodeRejected(SandboxError):
    """Agent code was refused before it ran: it reaches for something the sandbox forbids."""

    def __init__(self, message: str, lineno: int | None = None, line: str | None = None) -> None:
        where = f"line {lineno}: " if lineno else ""
        shown = f"\n    {line.strip()}" if line and line.strip() else ""
        super().__init__(f"{where}{message}{shown}")
        self.lineno = lineno
        self.reason = message


class AccessDenied(SandboxError, AttributeError):
    """Agent code asked for an attribute the policy does not expose.

    It is an AttributeError, so ``hasattr`` and ``getattr(obj, name, default)`` behave as if
    the attribute were not there.
    """


class ImportDenied(SandboxError, ImportError):
    """Agent code imported a module that is neither registered nor in the safe set."""


class CallDenied(SandboxError, TypeError):
    """Agent code called something in a way the sandbox forbids (three-argument ``type``,
    constructing a class registered with ``constructable=False``, ...)."""


class SandboxTimeout(SandboxError, TimeoutError):
    """Agent code ran past its time limit and was stopped."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class SandboxCancelled(SandboxError):
    """Agent code was cancelled while it ran."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class TaskError(AgexError):
    """A task ended without a result. A remote host raises the same type as a local run."""


class TaskFail(TaskError):
    """The agent gave up: it called ``task_fail(message)``; ``.message`` is that text."""


class TaskClarify(TaskError):
    """The agent needs more from you: it called ``task_clarify(message)``; ``.message`` is
    its question."""


class TaskTimeout(TaskError, TimeoutError):
    """The task used up its ``max_iterations`` steps or its ``timeout`` seconds."""


class TaskCancelled(TaskError):
    """The task was cancelled while it ran."""


class RemoteExecutionError(AgexError):
    """A task failed on a remote host for a reason other than its own outcome (a crash, a
    lost connection, an error in the agent's setup). ``remote_traceback`` is the traceback
    where it happened, and ``remote_type`` the remote exception's type name."""

    def __init__(
        self, message: str, remote_traceback: str | None = None, remote_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.remote_type = remote_type

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + visible(self.remote_traceback.rstrip())
        return text


class LLMError(AgexError):
    """The model could not be reached, or refused the request, even after retrying."""


class StateConflict(AgexError):
    """Another run moved the session on first: its commit stands, this one was not made."""


class SessionInUse(StateConflict):
    """A task called from another task's code would run on its caller's own session of its
    own agent: the caller's run is that session's until it ends. Never retried."""


class StateWriteError(AgexError):
    """The storage could not take a commit (a full disk, a read-only or vanished directory,
    a locked database, ...); the message names the store and the cause. The session stays
    on its last commit, and the same process goes on once the cause is gone."""


class StatePathRefused(AgexError, PermissionError):
    """A state path leads outside the directory the server keeps state in."""


class StateLoadError(AgexError):
    """A session's stored variables could not be loaded; the message names the variable and
    the commit, and ``agent.state(session).revert(...)`` can move the session back."""


class StateIntegrityError(StateLoadError):
    """Stored state failed its integrity check and was not loaded (unpickling data someone
    else could have written runs their code)."""


class IsolationError(AgexError):
    """The worker process that runs a task's agent code could not start, could not load
    the task, or ended before the run did (a crash, a limit reached); the message says
    which. Only that run ends."""
