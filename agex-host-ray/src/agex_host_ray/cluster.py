"""This process's side of the cluster: its one connection (Ray connects a process to one
cluster), and the runners it made, shared by every ray host of one configuration.

A runner (``agex_host_ray.runner``) is a Ray actor this process owns: it holds the host's
resources while it lives, runs up to ``concurrency`` tasks at once, and ends with this
process (Ray ends the actors of a driver that exits), so a caller that dies stops its runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agex.errors import RemoteExecutionError
from agex_host_ray.environment import Environment
from agex_host_ray.options import Options

#: Where runners are named, and how their names start.
NAMESPACE = "agex"
PREFIX = "agex-runner-"
#: Seconds a cancel waits for the runners to answer.
CANCEL_WAIT = 10.0
#: Seconds a starting runner may wait for room before idle runners give theirs back.
PLACING = 2.0

_lock = threading.Lock()
#: The addresses this process connected with (a host name, say, where Ray reports an IP).
_named: set[str | None] = set()
#: The runners of each configuration: resources and runtime env, as JSON.
_runners: dict[str, list[Runner]] = {}
#: The Ray job those runners belong to: after ``ray.shutdown()`` and a new ``ray.init()``
#: they are gone.
_job: list[str] = []


def ray_module(address: str | None) -> Any:
    """Ray, connected to the cluster at ``address`` (see ``Options``)."""
    import ray

    with _lock:
        if ray.is_initialized():
            _check_same(ray, address)
            return ray
        try:
            ray.init(address=address, logging_level=logging.WARNING)
            _named.add(address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RemoteExecutionError(
                f"could not connect to Ray at {address or 'this machine'}: {exc}. Start a "
                'cluster with `ray start --head` (then address="auto" finds it), or give the '
                "head node's address, or address=None to start Ray in this process"
            ) from None
    return ray


def known(address: str | None) -> bool:
    """Whether ``address`` names a cluster without starting one: ``address=None`` in a
    process not yet connected, with no ``RAY_ADDRESS``, would start Ray here."""
    import os
    import sys

    ray = sys.modules.get("ray")
    if (ray is not None and ray.is_initialized()) or address is not None:
        return True
    if os.environ.get("RAY_ADDRESS"):
        return True
    try:  # the cluster `ray start` last started on this machine, which None joins
        from ray._private.services import find_bootstrap_address

        return find_bootstrap_address(None) is not None
    except Exception:  # Ray's helper moved: ask Ray itself, which may start one
        return True


def _check_same(ray: Any, address: str | None) -> None:
    """A process connects to one cluster: a host that names another one is refused."""
    context = ray.get_runtime_context()
    if address in (None, "auto") or context.worker.mode == ray.WORKER_MODE:
        return  # the one it is in; a Ray worker always runs on its own cluster
    connected = context.gcs_address
    if address == connected or address in _named:
        return
    raise RemoteExecutionError(
        f"this process is connected to the Ray cluster at {connected}, and a process "
        f"connects to one cluster: a ray host at {address!r} cannot be used here. Use "
        "address=None (or the same address) for every ray host of this process"
    )


@dataclass(eq=False)
class Runner:
    key: str
    actor: Any = None
    running: int = 0
    #: When its last run ended (monotonic); it ends itself after the host's scaledown.
    idle_since: float = field(default_factory=time.monotonic)
    #: Set once it answered ``ready`` (``where``) or could not start (``error``).
    started: threading.Event = field(default_factory=threading.Event)
    where: dict[str, Any] | None = None
    error: BaseException | None = None


#: The configurations whose runners need the pins installed (a node lacked one of them).
_installing: set[str] = set()


def take(ray: Any, options: Options, env: Environment) -> Runner:
    """A started runner of this configuration with room for one more run (counted as
    running). Blocks while a runner starts: call it off the event loop."""
    key = json.dumps([options.actor(), options.concurrency, env], sort_keys=True, default=str)
    now = time.monotonic()
    job = ray.get_runtime_context().get_job_id()
    with _lock:
        if _job != [job]:
            _runners.clear()
            _job[:] = [job]
        runners = _runners.setdefault(key, [])
        for old in [r for r in runners if not r.running and r.started.is_set()]:
            # It ends itself after scaledown_window: not one so close to it.
            if now - old.idle_since > options.scaledown_window / 2:
                runners.remove(old)
                _kill(ray, old)
        free = [r for r in runners if r.running < options.concurrency]
        runner = min(free, key=lambda r: r.running) if free else Runner(key)
        if not free:
            runners.append(runner)
        runner.running += 1
    if not free:
        _start(ray, options, env, runner)
    runner.started.wait()
    if runner.error is not None:
        release(runner)
        drop(ray, runner)
        raise runner.error
    return runner


def release(runner: Runner) -> None:
    with _lock:
        runner.running -= 1
        runner.idle_since = time.monotonic()


def drop(ray: Any, runner: Runner) -> None:
    """Forget a runner that failed (its node died, or it broke): the next run starts another."""
    with _lock:
        runners = _runners.get(runner.key, [])
        if runner in runners:
            runners.remove(runner)
    _kill(ray, runner)


def _start(ray: Any, options: Options, env: Environment, runner: Runner) -> None:
    """Start ``runner``'s actor and wait until it is ready. Ray installs the pins only
    where a node lacks one of them: a runner starts without them first and says which it
    lacks, and is then started again with them (and every later runner of its kind)."""
    lacking: list[str] = []
    try:
        if env.pins and runner.key not in _installing:
            runner.actor = _actor(ray, options, env.base)
            runner.where = _ready(ray, runner, env.pins, options)
            lacking = runner.where["lacking"]
            if not lacking:
                return
            _installing.add(runner.key)
            _kill(ray, runner)
        runner.actor = _actor(ray, options, env.full)
        try:
            runner.where = _ready(ray, runner, (), options)
        except RemoteExecutionError as exc:
            if lacking:
                exc.args = (f"a node lacked {', '.join(lacking)}, and {exc.args[0]}",)
            raise
    except BaseException as exc:
        runner.error = exc
        raise
    finally:
        runner.started.set()


def _actor(ray: Any, options: Options, env: dict[str, Any]) -> Any:
    from agex_host_ray.runner import CONTROL, CONTROLS
    from agex_host_ray.runner import Runner as Code

    remote = ray.remote(concurrency_groups={CONTROL: CONTROLS})(Code).options(
        **options.actor(),
        # Named, so that task.cancel(session) in any process finds it (see cancel).
        name=f"{PREFIX}{secrets.token_hex(8)}",
        namespace=NAMESPACE,
        runtime_env=_uploaded(env) or None,
        max_concurrency=options.concurrency,
        # A run is never started again by Ray: it would repeat model calls and side effects.
        max_restarts=0,
        max_task_retries=0,
    )
    return remote.remote(options.scaledown_window)


def _ready(ray: Any, runner: Runner, pins: Sequence[str], options: Options) -> dict[str, Any]:
    """The runner's answer to ``ready``, once Ray has placed it and set up its runtime
    environment; within the host's timeout. While it waits for room, this process's idle
    runners of other configurations give back what they hold."""
    from agex_host_ray.errors import failure

    asked = runner.actor.ready.remote(list(pins))
    deadline = time.monotonic() + options.timeout
    freed = False
    while not ray.wait([asked], timeout=PLACING)[0]:
        if not freed:
            freed = True
            _free_idle(ray, runner.key)
        if time.monotonic() > deadline:
            _kill(ray, runner)
            raise RemoteExecutionError(
                f"the Ray worker for the task did not start within the host's "
                f"{options.timeout:g}s timeout: no node had room for {options.actor()} (free "
                "some, ask for less, or add nodes), or setting up its runtime environment "
                "took longer"
            )
    try:
        found: dict[str, Any] = ray.get(asked)
    except Exception as exc:
        translated = failure(ray, exc)
        if translated is None:
            raise
        raise RemoteExecutionError(
            f"Ray could not start a worker for the task: {translated.args[0]}",
            remote_traceback=translated.remote_traceback or str(exc),
            remote_type=translated.remote_type,
        ) from None
    return found


def _free_idle(ray: Any, keep: str) -> None:
    """End this process's idle runners of other configurations: the resources they hold
    until their scaledown window ends are wanted now."""
    with _lock:
        idle = [
            runner
            for key, runners in _runners.items()
            if key != keep
            for runner in runners
            if not runner.running and runner.started.is_set()
        ]
        for runner in idle:
            _runners[runner.key].remove(runner)
    for runner in idle:
        _kill(ray, runner)


def _uploaded(env: dict[str, Any]) -> dict[str, Any]:
    """``env`` with its local folders and files (``py_modules``, ``working_dir``) uploaded
    to the cluster, as ``ray.init`` does for a job's: an actor's runtime_env names them by
    URI. Ray uploads a folder once per content."""
    if not env.get("py_modules") and not env.get("working_dir"):
        return env
    import tempfile

    try:
        from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
        from ray._private.runtime_env.working_dir import upload_working_dir_if_needed
    except ImportError as exc:  # Ray's own helpers, which ray.init uses, moved
        raise RemoteExecutionError(
            f"this version of Ray does not upload code as agex-host-ray expects ({exc}): "
            "install a Ray release agex-host-ray supports (see its requirements)"
        ) from None
    env = dict(env)
    with tempfile.TemporaryDirectory(prefix="agex-ray-") as scratch:
        try:
            env = upload_py_modules_if_needed(env, include_gitignore=False, scratch_dir=scratch)
            env = upload_working_dir_if_needed(env, include_gitignore=False, scratch_dir=scratch)
        except Exception as exc:
            raise RemoteExecutionError(
                f"could not upload the agent's code to the Ray cluster: {exc}"
            ) from None
    return env


def _kill(ray: Any, runner: Runner) -> None:
    with contextlib.suppress(Exception):
        ray.kill(runner.actor, no_restart=True)


def cancel(ray: Any, agent: str, session: str) -> int:
    """Stop the runs of ``agent`` in ``session`` in every runner of the cluster, whichever
    process started them; how many there were. A runner that does not answer within
    :data:`CANCEL_WAIT` seconds is not counted."""
    asked = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != NAMESPACE or not entry.get("name", "").startswith(PREFIX):
            continue
        with contextlib.suppress(Exception):  # ended since it was listed
            actor = ray.get_actor(entry["name"], namespace=NAMESPACE)
            asked.append(actor.cancel.remote(agent, session))
    answered, _ = (
        ray.wait(asked, num_returns=len(asked), timeout=CANCEL_WAIT) if asked else ([], [])
    )
    stopped = 0
    for ref in answered:
        with contextlib.suppress(Exception):  # ended while it was asked
            stopped += int(ray.get(ref))
    return stopped
