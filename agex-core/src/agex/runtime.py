"""The agent-code side of a run: the namespace, each step's code, the variables a step
changed (serialized), and the value given to ``task_success`` (checked).

Everything here may run code the agent wrote or a client shipped, so it runs where such code
may run: in a confined worker process (``agex.isolation``), or in this process when the
agent's isolation is ``"none"``. The other side of the run (the loop in ``agex.loop``) calls
the model, writes storage and emits events; it only ever gets plain data from here: text,
JSON, and serialized values it stores without loading.
"""

from __future__ import annotations

import collections
import gc
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FunctionType, ModuleType
from typing import Any

from agex.coercion import conform
from agex.errors import (
    AccessDenied,
    AgexError,
    CallDenied,
    SandboxCancelled,
    SandboxTimeout,
    StateLoadError,
)
from agex.events import bound_text, jsonable
from agex.prompt import system_message, task_message
from agex.sandbox import CancelScope, Program, Signal
from agex.sandbox.guards import SCALARS, Guards
from agex.sandbox.live import kind_of
from agex.sandbox.ownership import AGENT_FILENAME, agent_class
from agex.state.config import seed_values
from agex.state.live import first_run, unused
from agex.state.recorder import Recorder
from agex.state.versioned import Entry, Facts, type_name

#: Longest repr of an input shown in a ``TaskStartEvent``.
INPUT_LIMIT = 500

#: The checked bytes of stored variables, by name, from the side that holds the storage.
Fetch = Callable[[list[str]], Mapping[str, bytes | memoryview]]


class TaskSuccess(Signal):
    pass


class TaskFailSignal(Signal):
    pass


class TaskClarifySignal(Signal):
    pass


def _task_success(value: Any = None) -> None:
    """Finish the task with ``value``."""
    raise TaskSuccess.issue(value)


def _task_fail(message: str) -> None:
    """Give up, saying why."""
    raise TaskFailSignal.issue(str.__str__(str(message)))


def _task_clarify(message: str) -> None:
    """Stop and ask the caller a question."""
    raise TaskClarifySignal.issue(str.__str__(str(message)))


SIGNALS = {
    "task_success": _task_success,
    "task_fail": _task_fail,
    "task_clarify": _task_clarify,
}
_KINDS = {TaskSuccess: "success", TaskFailSignal: "fail", TaskClarifySignal: "clarify"}


@dataclass
class Step:
    """What one step's code did, as the loop needs it."""

    output: str = ""
    #: The agent-facing traceback, when the code raised.
    error: str | None = None
    #: "success", "fail" or "clarify" when the code ended the task.
    signal: str | None = None
    #: task_fail's or task_clarify's message.
    message: str = ""
    #: "timeout" or "cancelled" when the step was stopped; ``where`` says in what.
    stopped: str | None = None
    where: str = ""
    #: Variables to commit: name -> serialized value, or None when removed.
    changes: dict[str, bytes | None] = field(default_factory=dict)
    #: Variables that could not be serialized, with why.
    skipped: dict[str, str] = field(default_factory=dict)
    #: What is known of each value serialized.
    facts: dict[str, Facts] = field(default_factory=dict)
    #: task_success's value as the task returns it, and as events show it ...
    value: Any = None
    shown: Any = None
    #: ... or why it does not fit.
    refused: str | None = None
    #: The variables a new session was given (its state's ``init``), with their types.
    seeded: dict[str, str] = field(default_factory=dict)


class Runtime:
    """One run's agent code: ``task`` of its agent with ``arguments``, in ``namespace`` (a
    live session's; otherwise made fresh)."""

    def __init__(
        self,
        task: Any,
        arguments: dict[str, Any],
        *,
        versioned: bool = False,
        namespace: dict[str, Any] | None = None,
    ) -> None:
        self.task, self.arguments = task, arguments
        self.agent = agent = task.agent
        self.sandbox = agent.sandbox
        self.namespace = (
            agent.sandbox.namespace(arguments, builtins=SIGNALS) if namespace is None else namespace
        )
        #: Whether the namespace is a live session's, which outlives the run.
        self.live = namespace is not None
        self.recorder = Recorder(agent) if versioned else None
        self.scope = CancelScope()
        self.fetch: Fetch | None = None

    def manifest(self) -> dict[str, Any]:
        return manifest(self.task, self.arguments)

    def seed(self, timeout: float | None) -> Step:
        """Give a new session the variables of its state's ``init`` (a task argument of the
        same name wins), serialized like a step's (versioned state). A session is new when no
        run has used it: a versioned one without a commit (the loop asks only then), a live
        one no run held before this one (``first_run``), and every ephemeral run's. ``init``
        is the caller's: run here, where agent code runs, under the time limit; its values
        reach agent code only if the sandbox would hand them over from the host."""
        init = getattr(self.agent.state_config, "init", None)
        if init is None or (self.live and not first_run(self.namespace)):
            return Step()
        step: Step | None = None
        try:
            step = self._seeded(init, timeout)
        finally:
            if self.live and (step is None or step.stopped):
                unused(self.namespace)  # nothing was given: the next run seeds it
        return step

    def _seeded(self, init: Any, timeout: float | None) -> Step:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            values = self.sandbox.call(seed_values, init, timeout=timeout, cancel=self.scope)
        except SandboxTimeout:
            return Step(stopped="timeout", where="running the state's init")
        except SandboxCancelled:
            return Step(stopped="cancelled")
        except Exception as exc:
            raise StateLoadError(
                f"the state's init of agent {self.agent.name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        taken = sorted(set(values) & (set(self.agent.policy.names) | set(SIGNALS)))
        if taken:
            raise StateLoadError(
                f"the state's init of agent {self.agent.name!r} names {', '.join(taken)}, "
                "which the agent's code already has (registrations, task_success...); "
                "rename the variables"
            )
        values = {k: v for k, v in values.items() if k not in self.arguments}
        try:
            values = self.sandbox.call(
                self._screened, values, timeout=_left(deadline), cancel=self.scope
            )
        except SandboxTimeout:
            return Step(stopped="timeout", where="checking the state's init")
        except SandboxCancelled:
            return Step(stopped="cancelled")
        self.namespace.update(values)
        step = Step(seeded={name: type_name(value) for name, value in values.items()})
        if self.recorder is not None:
            try:
                step.changes, step.skipped, step.facts = self.sandbox.call(
                    self.recorder.save,
                    set(values),
                    self.namespace,
                    timeout=_left(deadline),
                    cancel=self.scope,
                )
            except SandboxTimeout:
                return Step(stopped="timeout", where="saving the state's init")
            except SandboxCancelled:
                return Step(stopped="cancelled")
        return step

    def _screened(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` as agent code may have them. ``init`` is the host handing values to
        agent code, so each is walked for what would reach past the sandbox one step
        away (``_check_init_value``), after the check the sandbox gives a value read from a
        host object's attribute (a module becomes its view)."""
        guards = Guards(self.sandbox.policy)
        allowed = {
            id(v) for v in (*self.sandbox.policy.names.values(), *self.sandbox.builtins.values())
        }
        screened = {}
        for name, value in values.items():
            try:
                screened[name] = guards.screen(value, values, name)
                _check_init_value(name, value, allowed, self.sandbox.policy)
            except AccessDenied as exc:
                why = str(exc).replace(f"dict object.{name}", f"init[{name!r}]")
                raise StateLoadError(
                    f"the state's init of agent {self.agent.name!r} gives agent code the "
                    f"variable {name!r}, which it may not have: {why}; leave it out of init, "
                    "or register what agent code needs (agent.fn, agent.cls, agent.module)"
                ) from None
            except Exception as exc:
                raise StateLoadError(
                    f"the state's init of agent {self.agent.name!r} gives agent code the "
                    f"variable {name!r}, which could not be checked: {type(exc).__name__}"
                ) from None
        return screened

    def load(self, index: Mapping[str, Entry], fetch: Fetch) -> None:
        """The session's variables as the commit the run starts from lists them, read
        through ``fetch`` as steps come to need them (see ``Recorder``)."""
        assert self.recorder is not None
        self.fetch = fetch
        self.recorder.begin(index, self.arguments)

    def _bring(self, names: list[str], timeout: float | None) -> str | None:
        """Load the stored variables ``names`` into the namespace; "timeout" or "cancelled"
        when that was stopped. Loading can run the agent's own methods (a stored set hashes
        its items): under the time limit, and no signal raised there is obeyed."""
        assert self.recorder is not None
        assert self.fetch is not None
        blobs = self.fetch(names)
        try:
            values = self.sandbox.call(
                self.recorder.load, blobs, self.namespace, timeout=timeout, cancel=self.scope
            )
        except SandboxTimeout:
            return "timeout"
        except SandboxCancelled:
            return "cancelled"
        except CallDenied as exc:
            raise StateLoadError(f"loading the state failed: {exc}") from None
        self.namespace.update(values)
        return None

    def step(self, code: str, timeout: float | None) -> Step:
        """Run one step's code; serialize what it changed (versioned state); check the
        value given to task_success. ``timeout`` covers all three."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        sandbox, scope = self.sandbox, self.scope
        try:
            program: Program | None = sandbox.compile(code)
        except Exception:  # the run below reports it to the agent, and nothing ran
            program = None
        if self.recorder is not None and program is not None:
            needed = self.recorder.needed(program.code)
            stopped = needed and self._bring(needed, _left(deadline))
            if stopped:
                shown = ", ".join(needed[:10]) + (", ..." if len(needed) > 10 else "")
                return Step(stopped=stopped, where=f"loading state ({shown})")
        try:
            result = sandbox.run(
                program or code, self.namespace, timeout=_left(deadline), cancel=scope
            )
        except SandboxTimeout as exc:
            return Step(output=exc.output, stopped="timeout")
        except SandboxCancelled as exc:
            return Step(output=exc.output, stopped="cancelled")
        step = Step(output=result.output, error=result.error)
        signal = result.signal
        if self.recorder is not None and program is not None:
            # Serializing can run the agent's own methods: under its time limit too.
            try:
                step.changes, step.skipped, step.facts = sandbox.call(
                    self.recorder.changes,
                    program.code,
                    self.namespace,
                    timeout=_left(deadline),
                    cancel=scope,
                )
            except SandboxTimeout:
                return Step(output=result.output, stopped="timeout", where="saving state")
            except SandboxCancelled:
                return Step(output=result.output, stopped="cancelled")
        if signal is None:
            return step
        step.signal = _KINDS[type(signal)]
        if step.signal != "success":
            step.message = signal.args[0]
            return step
        value = signal.args[0] if signal.args else None
        try:
            step.value, step.shown = sandbox.call(
                _settle, value, self.task.returns, timeout=_left(deadline), cancel=scope
            )
        except SandboxTimeout:
            step.stopped = "timeout"
        except SandboxCancelled:
            step.stopped = "cancelled"
        except Exception as exc:
            step.refused = _plain_error(exc)
        return step


#: How deep and how many objects the check of an init value walks before refusing it.
INIT_DEPTH, INIT_OBJECTS = 20, 1_000_000

#: Containers an init value is walked through, each read by its own C-level iterator so that
#: no method a subclass overrides runs: items are what agent code can reach by indexing.
_SEQUENCES = (list, tuple, set, frozenset, collections.deque)
#: Objects that stand for a mapping they wrap (``gc.get_referents`` gives it, running nothing).
_WRAPPERS: tuple[type, ...] = (
    types.MappingProxyType,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)


def _check_init_value(name: str, value: Any, allowed: set[int], policy: Any) -> None:
    """Refuse (AccessDenied) an init value that hands agent code more than data: a callable
    that is not one of the agent's registrations, a builtin agent code has, or the agent's
    own code (a partial, closure or bound method leads past the sandbox in one call); a
    generator, iterator or coroutine (what it yields is never checked); a module inside a
    container. Walks the containers agent code can index, by type, calling none of the
    value's methods; the attribute reads of other objects are the sandbox's to check."""
    seen: set[int] = set()
    todo: list[tuple[Any, str, int]] = [(value, f"init[{name!r}]", 0)]
    while todo:
        obj, where, depth = todo.pop()
        kind = type(obj)
        if kind in SCALARS or id(obj) in seen:
            continue
        seen.add(id(obj))
        if depth > INIT_DEPTH or len(seen) > INIT_OBJECTS:
            raise AccessDenied(f"{where} is too deep or too large to check; flatten it")
        if isinstance(obj, ModuleType):
            if depth:
                raise AccessDenied(f"{where} is module {obj.__name__!r}; give it as a variable")
            continue  # the sandbox gives its view, or refuses it
        if any(k.__dict__.keys() & _ITERATING for k in kind.__mro__):
            raise AccessDenied(
                f"{where} is a {kind_of(obj)} (an iterator, generator or coroutine), whose "
                "items are never checked; give a list of them instead"
            )
        if callable(obj) and not (id(obj) in allowed or _agents(obj) or _registered(obj, policy)):
            raise AccessDenied(
                f"{where} is a {kind_of(obj)}, a callable that is not one of the agent's "
                "registrations; register it (agent.fn, agent.cls) instead"
            )
        if depth and policy.exposed(obj, where) is not obj:  # the top is the sandbox's to give
            raise AccessDenied(f"{where} is a {kind_of(obj)}, which agent code may not use")
        todo.extend((item, f"{where}{path}", depth + 1) for path, item in _items(obj))


#: Slots of a type whose instances produce values on demand.
_ITERATING = frozenset({"__next__", "__anext__", "__await__"})


def _items(obj: Any) -> list[tuple[str, Any]]:
    """What agent code reaches by indexing ``obj`` that is not a plain scalar, each with the
    path it is reached by."""
    if isinstance(obj, dict):
        found = [("[...] (a key)", k) for k in dict.keys(obj) if type(k) not in SCALARS]
        found += [(_key(k), v) for k, v in dict.items(obj) if type(v) not in SCALARS]
        if isinstance(obj, collections.defaultdict):
            factory = collections.defaultdict.__dict__["default_factory"].__get__(obj)
            found.append((".default_factory", factory))
        return found
    base: Any
    for base in _SEQUENCES:
        if isinstance(obj, base):
            items = enumerate(base.__iter__(obj))
            if base in (set, frozenset):
                return [("[...] (an item)", v) for _, v in items if type(v) not in SCALARS]
            return [(f"[{i}]", v) for i, v in items if type(v) not in SCALARS]
    if isinstance(obj, _WRAPPERS):
        return [(" (what it wraps)", inner) for inner in gc.get_referents(obj)]
    return []


def _key(key: Any) -> str:
    return f"[{key!r}]" if type(key) in SCALARS else "[...]"  # a key's own repr is not run


def _registered(obj: Any, policy: Any) -> bool:
    return isinstance(obj, type) and policy.class_rule(obj) is not None


def _agents(obj: Any) -> bool:
    """Code the agent wrote: read by type, since a host object's attribute lookup runs code."""
    if isinstance(obj, FunctionType):
        return obj.__code__.co_filename == AGENT_FILENAME
    return agent_class(obj if isinstance(obj, type) else type(obj))


def manifest(task: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """The run as the loop sees it: plain data only. Building the prompts and showing the
    inputs run the registrations' and arguments' own code: where they may run."""
    agent = task.agent
    return {
        "agent": agent.name,
        "task": task.name,
        "system": system_message(agent, task),
        "user": task_message(task, arguments),
        "inputs": {k: bound_text(repr(v), INPUT_LIMIT) for k, v in arguments.items()},
        "returns": task.returns_text,
        "max_iterations": agent.max_iterations,
        "timeout": agent.timeout,
        "on_conflict": task.on_conflict,
        "max_conflict_retries": task.max_conflict_retries,
        "setup": getattr(task, "setup", None),
        # Whether a new session is given variables (the state's init): only then does the
        # loop ask for them, before the model's first step.
        "init": getattr(agent.state_config, "init", None) is not None,
    }


def _settle(value: Any, annotation: Any) -> tuple[Any, Any]:
    """The value as the task's return annotation wants it, and how events show it."""
    value = conform(value, annotation, "the value given to task_success")
    return value, jsonable(value)


def _plain_error(exc: Exception) -> str:
    """An exception from checking a value, described without running any of its code."""
    if type(exc) is TypeError or isinstance(exc, AgexError):  # messages agex wrote
        return f"{type(exc).__name__}: {str.__str__(exc.args[0]) if exc.args else ''}"
    return f"{type(exc).__name__} raised while checking the value given to task_success"


def _left(deadline: float | None) -> float | None:
    import time

    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
