"""Host "modal": the whole loop runs in a Modal container, deployed on first use; events and
tokens stream back through the function's generator while it runs.

State lives in Modal: ``storage="memory"`` in a Dict per session (``agex.<fingerprint8>.
<session>``, entries expire after 7 days without use), ``storage="disk"`` in a Volume and a
Dict named from ``path`` (kept until deleted), ephemeral state fresh per task.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Sequence
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from agex.errors import RemoteExecutionError, TaskCancelled
from agex.hosts import Host
from agex.state.config import StateConfig
from agex_host_modal import names, sdk

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink

#: Modal's longest function timeout (24 hours).
LONGEST = 24 * 3600
#: The container's function outlives the task's timeout by this much, so that the task
#: reports its own TaskTimeout instead of being killed.
GRACE = 60

LIVE_REFUSED = (
    "the modal host does not support live state (no persistence between invocations): use "
    'connect_state(type="versioned", storage="memory"), storage="disk" with a path, or '
    'type="ephemeral"'
)
_GPU = re.compile(r"[A-Za-z0-9-]+(:[1-9][0-9]*)?")


class ModalHost(Host):
    provider = "modal"

    def __init__(
        self,
        secrets: str | list[str] | None = None,
        app: str | None = None,
        gpu: str | None = None,
        memory: int | None = None,
        timeout: float = 300.0,
        scaledown_window: int = 300,
    ) -> None:
        self.secrets = _secrets(secrets)
        self.app = None if app is None else names.check(app, "app")
        if gpu is not None and (not isinstance(gpu, str) or not _GPU.fullmatch(gpu)):
            raise ValueError(
                'gpu must be a Modal GPU type such as "T4", "A10G", "A100" or "H100:2", '
                f"got {gpu!r}"
            )
        if memory is not None and (
            not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0
        ):
            raise ValueError(f"memory must be a positive number of megabytes, got {memory!r}")
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
        self.gpu, self.memory = gpu, memory
        self.timeout, self.scaledown_window = float(timeout), scaledown_window
        self._functions: dict[str, Any] = {}
        self._names: dict[tuple[Any, ...], str] = {}
        self._lock = threading.Lock()

    @property
    def function_timeout(self) -> int:
        """The Modal function's timeout: whole seconds, with room to report a TaskTimeout."""
        return math.ceil(self.timeout) + GRACE

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
        from agex import plugins, remote
        from agex.hosts.running import RUNS
        from agex_host_modal.remote import run_key

        sdk.check_credentials()
        agent = invocation.agent
        serializer = plugins.create("serializer", "cloudpickle")
        envelope = remote.Envelope.of(
            invocation, state=self.state_for(agent, invocation.session), timeout=self.timeout
        )
        payload = remote.ship(invocation, serializer)
        function = await asyncio.to_thread(self.function, agent, invocation.task)
        stream = self._stream(function, envelope.to_json(), payload, sink)
        try:
            outcome = await RUNS.run(agent.name, invocation.session, stream)
        except (asyncio.CancelledError, TaskCancelled):
            # Modal does not stop a function whose caller stopped listening: ask it to.
            await asyncio.shield(asyncio.to_thread(_control().put, run_key(envelope.run), True))
            raise
        # Modal authenticates both ends of the call: no key of ours signs the value.
        return remote.settle(outcome, invocation, "")

    def cancel(self, agent: Agent, session: str) -> int:
        """Stop the agent's runs in ``session``, wherever they were started; returns how
        many of them this process started. A container stops within a second or so."""
        from agex.hosts.running import RUNS
        from agex_host_modal.remote import session_key

        stopped = RUNS.cancel(agent.name, session)
        sdk.check_credentials()
        _control().put(session_key(agent.name, session), token_hex(8))
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
            "gpu": self.gpu,
            "memory": self.memory,
            "timeout": self.timeout,
            "scaledown_window": self.scaledown_window,
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
        from agex_host_modal.app import app_name, volume_of
        from agex_host_modal.dependencies import agents
        from agex_host_modal.remote import FUNCTION

        modal = sdk.modal()
        # Naming the app scans installed distributions and hashes local sources: once per
        # definition of the agent and its sub-agents, not once per task.
        tasks = () if task is None else (task,)
        shipped = None if task is None else (task.func.__module__, task.func.__qualname__)
        defined = (*(one.fingerprint for one in agents(agent)), volume_of(agent), shipped)
        with self._lock:
            name = self._names.get(defined)
        if name is None:
            name = app_name(agent, self, tasks=tasks)
        with self._lock:
            self._names[defined] = name
            function = self._functions.get(name)
            if function is not None:
                return function
            function = modal.Function.from_name(name, FUNCTION)
            try:
                function.hydrate()
            except modal.exception.NotFoundError:
                self.build(agent, tasks).deploy(name=name)
                function = modal.Function.from_name(name, FUNCTION)
                function.hydrate()
            self._functions[name] = function
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
        self, function: Any, envelope: dict[str, Any], payload: bytes, sink: Sink
    ) -> dict[str, Any]:
        """Follow the container's messages to the run's outcome."""
        from agex.remote import deliver

        modal = sdk.modal()
        messages = function.remote_gen.aio(envelope, payload)
        try:
            async for kind, data in messages:
                outcome = deliver(kind, data, sink)
                if outcome is not None:
                    return outcome
        except modal.exception.Error as exc:
            raise RemoteExecutionError(
                f"Modal failed while running the task: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            await messages.aclose()
        raise RemoteExecutionError("the Modal function ended without the task's outcome")

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


def _control() -> Any:
    from agex_host_modal.remote import CONTROL

    return sdk.modal().Dict.from_name(CONTROL, create_if_missing=True)


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
