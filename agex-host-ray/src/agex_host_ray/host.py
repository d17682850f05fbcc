"""Host "ray": the whole loop runs on a Ray cluster, in a runner (a Ray actor) scheduled with
the host's resources; events and model tokens stream back through a Ray streaming generator
while it runs, and the outcome crosses as the remote-execution core writes it.

Ray never runs a task of ours a second time (no retries, no actor restarts): a run whose
node died ends with an error that says so, and its session's state is at its last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agex.errors import RemoteExecutionError, TaskTimeout
from agex.hosts import Host
from agex_host_ray import cluster
from agex_host_ray.environment import Environment
from agex_host_ray.errors import LOST, failure, lost
from agex_host_ray.options import Options

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink

#: The caller waits this much past the host's timeout for the run's own TaskTimeout.
GRACE = 30.0
#: Seconds without any message (a runner beats every ``runner.BEAT``) after which the
#: caller takes the runner's node for down or cut off.
SILENT = 30.0

LIVE_REFUSED = (
    "the ray host does not support live state (live objects cannot leave this process): use "
    'connect_state(type="versioned", storage="postgres", path=...), storage="disk" with a '
    'path every node of the cluster shares, or type="ephemeral"'
)
MEMORY_REFUSED = (
    "the ray host runs tasks on the cluster's nodes, which share no memory: memory storage "
    'would be lost between tasks. Use connect_state(type="versioned", storage="postgres", '
    'path="my-agent") (every node reaches the database), storage="disk" with a path every '
    'node mounts (a shared filesystem), or type="ephemeral"'
)


class RayHost(Host):
    provider = "ray"
    ships_agent = True  # the loop runs on the cluster
    provides = ("ray",)  # every node has Ray: never pinned

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
        timeout: float = 300.0,
        concurrency: int = 64,
        scaledown_window: float = 300.0,
    ) -> None:
        self.options = Options.checked(
            address,
            num_cpus,
            num_gpus,
            memory,
            resources,
            runtime_env,
            timeout,
            concurrency,
            scaledown_window,
        )
        self._envs: dict[tuple[Any, ...], Environment] = {}
        self._lock = threading.Lock()

    @property
    def timeout(self) -> float:
        return self.options.timeout

    # -- the Host protocol -------------------------------------------------------------

    def validate(self, agent: Agent) -> None:
        """State every node can reach: ephemeral, or versioned where the nodes share it."""
        _check_state(agent.state_config, f"agent {agent.name!r}")

    def validate_subagent(self, parent: Agent, sub: Agent) -> None:
        """A sub-agent of an agent on Ray that runs in its worker keeps its state where the
        cluster's nodes reach it, as its parent does."""
        if isinstance(parent.host, RayHost) and not getattr(sub.host, "ships_agent", False):
            _check_state(sub.state_config, f"sub-agent {sub.name!r}, which runs on the cluster,")

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        from agex import plugins
        from agex import remote as core
        from agex.hosts.running import RUNS

        agent = invocation.agent
        serializer = plugins.create("serializer", "cloudpickle")
        envelope = core.Envelope.of(invocation, timeout=self.options.timeout)
        payload = core.ship(invocation, serializer)
        work = self._run(agent, (invocation.task,), envelope, payload, sink)
        outcome = await RUNS.run(agent.name, invocation.session, work)
        # Ray authenticates the cluster's members: no key of ours signs the value.
        return core.settle(outcome, invocation, "")

    async def arun_shipped(
        self, envelope: Any, payload: bytes, sink: Sink, agent: Agent | None = None
    ) -> dict[str, Any]:
        """A task a confined worker shipped (a sub-agent its agent code calls), run as its
        own runner's; its outcome left for that worker to load. Its runtime environment is
        the one this code runs in (in a runner), or inferred from ``agent``."""
        from dataclasses import replace

        from agex.remote.outcome import verified

        envelope = replace(envelope, timeout=self.options.timeout)
        outcome = await self._run(agent, (), envelope, payload, sink)
        return verified(outcome, "")

    def cancel(self, agent: Agent, session: str) -> int:
        """Stop the agent's runs in ``session`` on the cluster, whichever process started
        them; returns how many were stopped. This process's callers raise TaskCancelled at
        once; the runs stop on their runners at their next step."""
        from agex.hosts.running import RUNS

        here = RUNS.cancel(agent.name, session)
        if not cluster.known(self.options.address):
            return here  # no cluster to ask: connecting would start one here
        ray = cluster.ray_module(self.options.address)
        return max(here, cluster.cancel(ray, agent.name, session))

    def warmup(self, agent: Agent) -> None:
        """Connect, and start a runner: Ray builds its runtime environment, and the runner
        starts its confined workers' template."""
        _, runner = self._runner(agent, ())
        cluster.release(runner)

    def delegate_config(self) -> dict[str, Any]:
        """What the runner of a parent agent rebuilds this host from, to run a sub-agent on
        it: the whole configuration, ``env_vars`` included (see ``dump_config``)."""
        return {"provider": self.provider, **self.options.dump()}

    def dump_config(self) -> dict[str, Any]:
        """No secrets: ``runtime_env``'s ``env_vars`` stay out (the agent, and its hosts'
        configuration with it, is loaded where agent code runs)."""
        dumped = self.options.dump()
        if dumped["runtime_env"] and "env_vars" in dumped["runtime_env"]:
            kept = {k: v for k, v in dumped["runtime_env"].items() if k != "env_vars"}
            dumped["runtime_env"] = kept or None
        return {"provider": self.provider, **dumped}

    # -- Ray ---------------------------------------------------------------------------

    def runtime_env(self, agent: Agent | None, tasks: Sequence[Any] = ()) -> Environment:
        """What a runner of ``agent`` gets: what it needs, inferred here, with the
        ``runtime_env`` given to the host merged in. Inferred once per definition of the
        agent and its sub-agents (and task). Without the agent (a sub-agent that a runner's
        agent code called), the environment of the runner this code runs in."""
        from agex.remote.dependencies import agents
        from agex_host_ray import environment

        given = dict(self.options.runtime_env)
        if agent is None:  # a sub-agent shipped from a runner: its environment holds it
            inside = _inherited()
            if inside is None:
                raise RemoteExecutionError(
                    "a ray host runs a task shipped without its agent only from a Ray worker"
                )
            return environment.environment(inside, given)
        shipped = tuple((task.func.__module__, task.func.__qualname__) for task in tasks)
        defined = (*(one.fingerprint for one in agents(agent)), shipped)
        with self._lock:
            found = self._envs.get(defined)
        if found is None:
            found = environment.environment(environment.inferred(agent, tasks), given)
            with self._lock:
                self._envs[defined] = found
        return found

    def _runner(self, agent: Agent | None, tasks: Sequence[Any]) -> tuple[Any, cluster.Runner]:
        ray = cluster.ray_module(self.options.address)
        env = self.runtime_env(agent, tasks)
        return ray, cluster.take(ray, self.options, env)

    async def _run(
        self,
        agent: Agent | None,
        tasks: Sequence[Any],
        envelope: Any,
        payload: bytes,
        sink: Sink,
    ) -> dict[str, Any]:
        """Take a runner, then follow the run there: both are the run, which a cancel stops
        while its runner still starts too. A runner taken once nobody waits for it is handed
        back by the thread that took it (the caller's event loop may be gone by then)."""
        lock = threading.Lock()
        wanted: dict[str, Any] = {"waiting": True}

        def take() -> tuple[Any, cluster.Runner]:
            found = self._runner(agent, tasks)
            with lock:
                if wanted["waiting"]:
                    wanted["taken"] = found
                    return found
            cluster.release(found[1])
            return found

        try:
            ray, runner = await asyncio.to_thread(take)
        except BaseException:
            with lock:
                wanted["waiting"] = False
                taken = wanted.pop("taken", None)
            if taken is not None:
                cluster.release(taken[1])
            raise
        try:
            return await self._follow(ray, runner, envelope, payload, sink)
        finally:
            cluster.release(runner)

    async def _follow(
        self, ray: Any, runner: cluster.Runner, envelope: Any, payload: bytes, sink: Sink
    ) -> dict[str, Any]:
        """Follow the run's messages to its outcome; stop the run if the caller stops."""
        from agex.remote import deliver
        from agex.remote.messages import KINDS

        # What nobody listens to is not sent: a Ray item costs about the same, full or not.
        wants = [k for k, f in (("event", sink.on_event), ("tokens", sink.on_token)) if f]
        messages = runner.actor.run.options(num_returns="streaming").remote(
            envelope.to_json(), payload, wants
        )
        ended = False
        try:
            async with asyncio.timeout(self.options.timeout + GRACE) as limit:
                while True:
                    try:
                        async with asyncio.timeout(SILENT) as quiet:
                            text = await (await anext(messages))
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        if not quiet.expired():
                            raise
                        cluster.drop(ray, runner)
                        raise RemoteExecutionError(
                            f"the Ray worker running the task sent nothing for {SILENT:g}s, "
                            "not even its heartbeat: its node is down, cut off or overloaded. "
                            f"agex stopped it; {LOST}"
                        ) from None
                    for kind, data in _messages(text, KINDS):  # none: a beat
                        outcome = await deliver(kind, data, sink)
                        if outcome is not None:
                            ended = True
                            return outcome
        except TimeoutError:
            if not limit.expired():
                raise
            raise TaskTimeout(
                f"the run did not end within the host's {self.options.timeout:g}s timeout "
                f"(and {GRACE:g}s more for it to say so): it was stopped"
            ) from None
        except Exception as exc:
            translated = failure(ray, exc)
            if translated is None:
                raise
            if lost(ray, exc):
                cluster.drop(ray, runner)
            raise translated from None
        finally:
            if not ended:
                with contextlib.suppress(Exception):
                    ray.cancel(messages)
                    # Should the call reach the runner after all, the run stops as it begins.
                    runner.actor.stop.remote(envelope.run)
        ended = True
        raise RemoteExecutionError(
            "the Ray worker ended the run without the task's outcome (it stopped before the "
            f"task ended): {LOST}"
        )

    # -- pickling: caches stay here -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self._envs, self._lock = {}, threading.Lock()

    def __repr__(self) -> str:
        return f"RayHost(address={self.options.address!r})"


def _check_state(config: Any, who: str) -> None:
    if config.type == "live":
        raise ValueError(LIVE_REFUSED)
    if config.type != "versioned":
        return
    if config.storage == "memory":
        raise ValueError(MEMORY_REFUSED)
    if config.storage == "disk" and not (config.path and config.path.startswith("/")):
        raise ValueError(
            f"{who} keeps disk state on the ray host, which needs an absolute path that every "
            "node of the cluster mounts (a shared filesystem; keeping it shared is yours to "
            f'do), got path={config.path!r}: e.g. connect_state(type="versioned", '
            'storage="disk", path="/mnt/shared/agex"), or storage="postgres"'
        )


def _inherited() -> dict[str, Any] | None:
    """The runtime environment of the Ray worker this code runs in, if it runs in one."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    env = context.runtime_env
    # Not its env_vars: a sub-agent's runner gets its own host's, not its parent's.
    kept = ("pip", "py_modules", "uv", "conda")
    return {k: v for k, v in dict(env).items() if k in kept}


def _messages(text: object, kinds: Sequence[str]) -> list[tuple[str, Any]]:
    """A batch as the runner writes it, checked: a list of ``[kind, data]``, JSON text."""
    try:
        batch = json.loads(text) if isinstance(text, str) else None
    except (ValueError, TypeError, RecursionError):
        batch = None
    if isinstance(batch, list) and all(
        isinstance(m, list) and len(m) == 2 and m[0] in kinds for m in batch
    ):
        return [(kind, data) for kind, data in batch]
    raise RemoteExecutionError(f"the Ray worker sent a message agex cannot read: {text!r:.200}")
