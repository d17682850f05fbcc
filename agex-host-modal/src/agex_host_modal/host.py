"""Host "modal": the whole loop runs in a Modal container, deployed on first use; events and
tokens stream back through the function's generator while it runs.

State lives in Modal: ``storage="memory"`` in a Dict per session (``agex.<fingerprint8>.
<session>``, entries expire after 7 days without use), ``storage="disk"`` in a Volume and a
Dict named from ``path`` (kept until deleted), ephemeral state fresh per task.

Every call to Modal from here is made in its async form, on the caller's event loop, but
the heartbeat's, which beats from a thread of its own; the synchronous methods of the Host
protocol (``warmup``, ``cancel``) run theirs to the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import re
import threading
import time
import warnings
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agex.errors import RemoteExecutionError
from agex.hosts import Host
from agex.state.config import StateConfig
from agex_host_modal import names, remote, sdk

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink

#: Modal's longest function timeout (24 hours).
LONGEST = 24 * 3600
#: The container's function outlives the task's timeout by this much, so that the task
#: reports its own TaskTimeout instead of being killed.
GRACE = 60

#: The GPU types Modal's GPU guide lists (https://modal.com/docs/guide/gpu), and the most of
#: each one container may have. The SDK passes any name on, so a type not listed here is
#: passed on too, with a warning: it may be newer than this list.
GPU_TYPES = {
    "T4": 8,
    "L4": 8,
    "A10": 4,
    "A10G": 4,
    "L40S": 8,
    "A100": 8,
    "A100-40GB": 8,
    "A100-80GB": 8,
    "RTX-PRO-6000": 8,
    "H100": 8,
    "H100!": 8,
    "H200": 8,
    "B200": 8,
    "B200+": 8,
}
#: How the SDK reads a GPU request: a type, then ``:count`` (``modal._utils.function_utils.
#: parse_gpu_config``); a type may end in ``!`` (exactly it) or ``+`` (it or better).
_GPU = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*[!+]?)(?::([0-9]+))?")

LIVE_REFUSED = (
    "the modal host does not support live state (no persistence between invocations): use "
    'connect_state(type="versioned", storage="memory"), storage="disk" with a path, or '
    'type="ephemeral"'
)

_T = TypeVar("_T")


class ModalHost(Host):
    provider = "modal"
    ships_agent = True  # the loop runs in a Modal container
    provides = ("modal",)  # Modal puts its own client in every container: never pinned

    def __init__(
        self,
        secrets: str | list[str] | None = None,
        app: str | None = None,
        gpu: str | list[str] | None = None,
        memory: int | tuple[int, int] | list[int] | None = None,
        timeout: float = 300.0,
        scaledown_window: int = 300,
        preemptible: bool | None = None,
    ) -> None:
        self.secrets = _secrets(secrets)
        self.app = None if app is None else names.check(app, "app")
        self.gpu = _gpu(gpu)
        self.memory = _memory(memory)
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout <= LONGEST - GRACE
        ):
            raise ValueError(
                f"timeout must be a number of seconds above 0 and at most {LONGEST - GRACE} "
                f"(Modal runs a function for at most 24 hours), got {timeout!r}"
            )
        if (
            not isinstance(scaledown_window, int)
            or isinstance(scaledown_window, bool)
            or not 2 <= scaledown_window <= 3600
        ):
            raise ValueError(
                "scaledown_window must be a whole number of seconds from 2 to 3600, got "
                f"{scaledown_window!r}"
            )
        if preemptible not in (None, True, False):
            raise ValueError(f"preemptible must be True, False or None, got {preemptible!r}")
        if preemptible is False and self.gpu is not None:
            raise ValueError(
                "Modal runs no GPU function on non-preemptible machines: leave preemptible "
                "unset (a GPU function is preemptible), or drop gpu="
            )
        self.preemptible = preemptible
        self.timeout, self.scaledown_window = float(timeout), scaledown_window
        #: Deployed functions by app name; a Future while one call looks it up or deploys.
        self._functions: dict[str, Any] = {}
        self._names: dict[tuple[Any, ...], str] = {}
        self._lock = threading.Lock()

    @property
    def function_timeout(self) -> int:
        """The Modal function's timeout: whole seconds, with room to report a TaskTimeout."""
        return math.ceil(self.timeout) + GRACE

    @property
    def nonpreemptible(self) -> bool:
        """Whether the function is deployed on machines Modal does not preempt: unless
        ``preemptible=True``, or a GPU (which Modal offers only preemptible)."""
        if self.preemptible is None:
            return self.gpu is None
        return not self.preemptible

    # -- the Host protocol -------------------------------------------------------------

    def validate(self, agent: Agent) -> None:
        """The seed's state rules for Modal."""
        config = agent.state_config
        if config.type == "live":
            raise ValueError(LIVE_REFUSED)
        if config.type != "versioned":
            return
        if config.storage == "disk" and not config.path:
            raise ValueError(
                'disk state on Modal needs a path, which names its Volume: connect_state(type="'
                'versioned", storage="disk", path="my-agent")'
            )
        if config.storage not in ("memory", "disk", "modal-dict", "modal-volume"):
            raise ValueError(
                f"the modal host keeps versioned state in Modal, not in {config.storage!r} "
                'storage: use storage="memory" (a Modal Dict) or storage="disk" with a path '
                "(a Modal Volume)"
            )

    def validate_subagent(self, parent: Agent, sub: Agent) -> None:
        """The seed's limits: no Modal host under another agent, and only ephemeral state
        for the sub-agents of an agent that runs on Modal."""
        if isinstance(sub.host, ModalHost):
            raise ValueError(
                f"agent {sub.name!r} runs on Modal, and sub-agents with Modal hosts cannot be "
                f"registered on another agent yet: call its tasks directly, or give "
                f"{sub.name!r} a local or http host"
            )
        if isinstance(parent.host, ModalHost) and sub.state_config.type != "ephemeral":
            raise ValueError(
                f"agent {parent.name!r} runs on Modal, so its sub-agent {sub.name!r} cannot "
                f"have {sub.state_config.type} state yet: create {sub.name!r} without state=, "
                "or run the parent locally"
            )

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        from agex import plugins
        from agex import remote as core
        from agex.hosts.running import RUNS

        sdk.check_credentials()
        agent, session = invocation.agent, invocation.session
        serializer = plugins.create("serializer", "cloudpickle")
        envelope = core.Envelope.of(
            invocation, state=self.state_for(agent, session), timeout=self.timeout
        )
        payload = core.ship(invocation, serializer)
        function = await self.afunction(agent, invocation.task)
        control = remote.control()
        # A cancel of the session made from now on stops this run, even while the container
        # starts. This process reads nothing from the control Dict: any container can write
        # it, and reading a Modal Dict value unpickles it.
        watch = {"since": time.time(), "stale": remote.STALE}
        beating = _Heartbeat(control, remote.alive_key(envelope.run))
        try:
            outcome = await RUNS.run(
                agent.name, session, self._stream(function, envelope, payload, watch, sink)
            )
        except BaseException:
            # Modal does not stop a function whose caller stopped listening: ask it to.
            await asyncio.shield(_stop(control, envelope.run))
            raise
        finally:
            broken = beating.stop()
        if broken is not None:  # not Modal's error (those are retried): a bug, to be seen
            raise broken
        # Modal authenticates both ends of the call: no key of ours signs the value.
        return core.settle(outcome, invocation, "")

    def cancel(self, agent: Agent, session: str) -> int:
        """Stop the agent's runs in ``session``, wherever they were started; returns how
        many of them this process started. A container stops within a second or so."""
        from agex.hosts.running import RUNS

        stopped = RUNS.cancel(agent.name, session)
        sdk.check_credentials()
        _blocking(_cancel_session(agent.name, session))
        return stopped

    def warmup(self, agent: Agent) -> None:
        """Build the image and deploy the app now, unless it is deployed already."""
        sdk.check_credentials()
        self.function(agent)

    def dump_config(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "secrets": list(self.secrets),
            "app": self.app,
            "gpu": list(self.gpu) if isinstance(self.gpu, list) else self.gpu,
            "memory": list(self.memory) if isinstance(self.memory, tuple) else self.memory,
            "timeout": self.timeout,
            "scaledown_window": self.scaledown_window,
            "preemptible": self.preemptible,
        }

    def state_storage(self, agent: Agent, session: str) -> Any:
        """Where the agent's state is, read from this machine through Modal's API."""
        from agex.stores import LOCAL

        state = self.state_for(agent, session)
        if state.storage is None:
            raise ValueError(f"agent {agent.name!r} keeps no state on Modal")
        return LOCAL.storage(state)

    # -- Modal -------------------------------------------------------------------------

    def build(self, agent: Agent, tasks: Sequence[Any] = ()) -> Any:
        """The ``modal.App`` that runs ``agent``'s tasks, built without the network."""
        from agex_host_modal.app import build

        return build(agent, self, tasks)

    def function(self, agent: Agent, task: Any = None) -> Any:
        """The deployed function for ``agent`` (and ``task``, whose modules the image must
        hold), deploying the app first when Modal has none by its name."""
        return _blocking(self.afunction(agent, task))

    async def afunction(self, agent: Agent, task: Any = None) -> Any:
        """:meth:`function`, from async code. Calls that ask at once for the same app wait
        for the one that looks it up (and deploys it), and share its answer."""
        tasks = () if task is None else (task,)
        name = await asyncio.to_thread(self._app_name, agent, tasks)
        while True:
            with self._lock:
                found = self._functions.get(name)
                if found is None:
                    mine = self._functions[name] = concurrent.futures.Future()
            if found is None:
                break
            if not isinstance(found, concurrent.futures.Future):
                return found
            with contextlib.suppress(asyncio.CancelledError):
                return await asyncio.shield(asyncio.wrap_future(found))
            current = asyncio.current_task()
            if not found.cancelled() or (current is not None and current.cancelling()):
                raise asyncio.CancelledError
            # The call that was looking it up was cancelled: look it up here.
        try:
            function = await self._deployed(agent, name, tasks)
        except BaseException as exc:
            with self._lock:
                self._functions.pop(name, None)
            if isinstance(exc, Exception):
                mine.set_exception(exc)
            else:
                mine.cancel()
            raise
        with self._lock:
            self._functions[name] = function
        mine.set_result(function)
        return function

    def _app_name(self, agent: Agent, tasks: Sequence[Any]) -> str:
        from agex.remote.dependencies import agents
        from agex_host_modal.app import app_name, volume_of

        # Naming the app scans installed distributions and hashes local sources: once per
        # definition of the agent and its sub-agents (and task), not once per call.
        shipped = tuple((task.func.__module__, task.func.__qualname__) for task in tasks)
        defined = (*(one.fingerprint for one in agents(agent)), volume_of(agent), shipped)
        with self._lock:
            name = self._names.get(defined)
        if name is None:
            name = app_name(agent, self, tasks=tasks)
            with self._lock:
                self._names[defined] = name
        return name

    async def _deployed(self, agent: Agent, name: str, tasks: Sequence[Any]) -> Any:
        """The function of app ``name``, deployed first when Modal has no app by that name."""
        modal = sdk.modal()
        function = modal.Function.from_name(name, remote.FUNCTION)
        try:
            await function.hydrate.aio()
            return function
        except modal.exception.NotFoundError:
            pass
        except modal.exception.Error as exc:
            raise sdk.failure(exc, f"looking up app {name!r}") from exc
        app = await asyncio.to_thread(self.build, agent, tasks)  # no network: local files
        try:
            await app.deploy.aio(name=name)
            function = modal.Function.from_name(name, remote.FUNCTION)
            await function.hydrate.aio()
        except modal.exception.Error as exc:
            raise sdk.failure(exc, f"deploying app {name!r}") from exc
        return function

    def state_for(self, agent: Agent, session: str) -> StateConfig:
        """The state configuration the task uses in the container: Modal storages named
        from the agent's fingerprint and session (memory) or from the path (disk)."""
        from agex_host_modal.app import volume_of

        config = agent.state_config
        if config.type != "versioned":
            return StateConfig(config.type, None, None)
        volume = volume_of(agent)
        if volume is not None:
            return StateConfig("versioned", "modal-volume", volume)
        if config.storage == "modal-dict" and config.path:
            return StateConfig("versioned", "modal-dict", config.path)
        return StateConfig(
            "versioned", "modal-dict", names.session_dict(agent.fingerprint, session)
        )

    async def _stream(
        self,
        function: Any,
        envelope: Any,
        payload: bytes,
        watch: dict[str, Any],
        sink: Sink,
    ) -> dict[str, Any]:
        """Follow the container's messages to the run's outcome."""
        from agex.remote import deliver

        messages = function.remote_gen.aio(envelope.to_json(), payload, watch=watch)
        try:
            while True:
                try:
                    kind, data = await anext(messages)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise sdk.failure(exc, "running the task") from exc
                outcome = await deliver(kind, data, sink)  # the caller's callbacks: theirs to raise
                if outcome is not None:
                    return outcome
        finally:
            with contextlib.suppress(Exception):
                await messages.aclose()
        # No outcome: Modal ran the input again (remote.RESTARTED), and its client skipped
        # the new container's messages up to the count it had from the first, outcome too.
        try:  # whether the key is there, not its value, which a container could shape
            restarted = await remote.control().contains.aio(remote.restart_key(envelope.run))
        except sdk.modal().exception.Error as exc:
            raise sdk.failure(exc, "reading why the task ended without an outcome") from exc
        if restarted:
            return remote.restarted_outcome()
        raise RemoteExecutionError(
            "the Modal function ended without the task's outcome (its container stopped "
            "before the task ended): the session's state is unchanged, run the task again"
        )

    # -- pickling: function handles stay here ------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_functions"], state["_names"], state["_lock"] = {}, {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModalHost(secrets={list(self.secrets)!r})"


# -- talking to the run's container through the control Dict ----------------------------------


class _Heartbeat:
    """Renews ``key`` every ``remote.HEARTBEAT`` seconds while the caller listens: the
    container stops a run whose caller stopped renewing it (its process died). It beats from
    a thread of its own, so a callback that holds the caller's event loop (a slow sink, a
    prompt for a person) does not stop it. A beat Modal does not take is tried again at the
    next one."""

    def __init__(self, control: Any, key: str) -> None:
        self.control, self.key = control, key
        self.stopped = threading.Event()
        self.broken: BaseException | None = None
        threading.Thread(target=self._beat, daemon=True, name="agex-modal-heartbeat").start()

    def _beat(self) -> None:
        beat = 0
        try:
            while True:
                beat += 1
                with contextlib.suppress(sdk.modal().exception.Error):
                    self.control.put(self.key, beat)
                if self.stopped.wait(remote.HEARTBEAT):
                    return
        except Exception as exc:
            self.broken = exc

    def stop(self) -> BaseException | None:
        """Stop beating; what broke the beat, if anything did."""
        self.stopped.set()
        return self.broken


async def _stop(control: Any, run: str) -> None:
    """Ask the run's container to stop. When Modal cannot be told, the container stops
    anyway once the heartbeat has been missing for ``remote.STALE`` seconds."""
    with contextlib.suppress(sdk.modal().exception.Error):
        await control.put.aio(remote.run_key(run), True)


async def _cancel_session(agent: str, session: str) -> None:
    try:
        await remote.control().put.aio(remote.cancel_key(agent, session, time.time()), True)
    except sdk.modal().exception.Error as exc:
        raise sdk.failure(exc, f"asking the runs of {agent!r} in {session!r} to stop") from exc


def _blocking(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to its end for synchronous code: here, or on a thread of its own
    when this thread runs an event loop (code in a notebook), whose other tasks would
    otherwise stall on Modal's calls."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


# -- parameters ------------------------------------------------------------------------------


def _secrets(secrets: object) -> tuple[str, ...]:
    if secrets is None:
        raise ValueError(
            "the modal host needs secrets: the names of the Modal secrets that hold your API "
            'keys, e.g. connect_host(provider="modal", secrets="llm-keys"). Create one with '
            "`modal secret create llm-keys OPENAI_API_KEY=...`"
        )
    listed = [secrets] if isinstance(secrets, str) else secrets
    if not isinstance(listed, list | tuple) or not listed:
        raise ValueError(f"secrets must be a secret name or a list of them, got {secrets!r}")
    return tuple(names.check(name, "each secret") for name in listed)


def _gpu(gpu: object) -> str | list[str] | None:
    """A GPU request as Modal takes it: ``"TYPE"``, ``"TYPE:count"``, or a list of them,
    tried in order (the first Modal has free is used)."""
    if gpu is None:
        return None
    if isinstance(gpu, list | tuple) and gpu and all(isinstance(one, str) for one in gpu):
        return [_one_gpu(one) for one in gpu]
    if isinstance(gpu, str):
        return _one_gpu(gpu)
    raise ValueError(
        'gpu must be a Modal GPU type such as "T4", "A10G", "L40S" or "H100", with ":count" '
        f'for more than one ("H100:2"), or a list of them to fall back on, got {gpu!r}'
    )


def _one_gpu(gpu: str) -> str:
    match = _GPU.fullmatch(gpu)
    if match is None:
        raise ValueError(
            f'gpu must be a Modal GPU type such as "T4", "A10G", "L40S" or "H100", with '
            f'":count" for more than one ("H100:2"), got {gpu!r}'
        )
    kind, count = match.group(1).upper(), match.group(2)
    most = GPU_TYPES.get(kind, max(GPU_TYPES.values()))
    if count is not None and not 1 <= int(count) <= most:
        raise ValueError(
            f"gpu {gpu!r} asks for {int(count)} GPUs: Modal gives a container from 1 to "
            f"{most} of type {kind}"
        )
    if kind not in GPU_TYPES:
        warnings.warn(
            f"gpu {gpu!r} names a type Modal's GPU guide does not list ("
            f"{', '.join(GPU_TYPES)}); Modal will refuse it when the app deploys unless it "
            "is newer than that list",
            UserWarning,
            stacklevel=4,
        )
    return gpu


def _memory(memory: object) -> int | tuple[int, int] | None:
    """Memory as Modal takes it, in MiB: a request (the least the container gets; it may
    use more when the machine has it), or ``(request, limit)``, where the limit is the
    most the container may use before Modal stops it."""

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if memory is None or whole(memory):
        return memory  # type: ignore[return-value]
    if isinstance(memory, list | tuple) and len(memory) == 2 and all(map(whole, memory)):
        request, limit = memory
        if limit < request:
            raise ValueError(
                f"memory=({request}, {limit}) sets a limit below the request: Modal needs "
                "the limit (the most the container may use) at least as large as the "
                "request (the least it gets)"
            )
        return (request, limit)
    raise ValueError(
        "memory must be a whole number of MiB the container asks for (e.g. 4096), or a "
        f"(request, limit) pair of them (e.g. (4096, 8192)), got {memory!r}"
    )
