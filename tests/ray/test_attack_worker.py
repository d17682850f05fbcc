"""Attacks from agent code on the ray host: what a confined worker started by a runner can
reach. Registered functions run in that worker too, so a function that does the forbidden
thing stands for agent code that got past the sandbox's guards."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from agex import Agent, TaskTimeout
from agex.testing.host import scripted

SECRET = "agex-attack-secret-value"


def probe(targets: list, gcs: str) -> str:
    """Everything this process can see of the runner, the cluster and the caller."""
    import glob
    import os
    import socket
    import sys

    found: dict = {"env": dict(os.environ), "path": list(sys.path), "uid": os.getuid()}
    found["ppid"] = os.getppid()
    reads: dict = {}
    for target in [*targets, f"/proc/{os.getppid()}/environ", "/proc/1/environ"]:
        try:
            if os.path.isdir(target):
                reads[target] = "listed: " + ",".join(sorted(os.listdir(target))[:20])
            else:
                with open(target, "rb") as f:
                    reads[target] = "read: " + f.read(200).decode("latin-1")
        except Exception as exc:
            reads[target] = f"refused: {type(exc).__name__}"
    found["reads"] = reads
    try:
        found["fds"] = sorted(os.listdir("/proc/self/fd"))
    except Exception as exc:
        found["fds"] = f"refused: {type(exc).__name__}"
    open_sockets = []
    for fd in range(3, 256):
        try:
            os.fstat(fd)
        except OSError:
            continue
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            try:
                what = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                what = "?"
            try:
                what += " lists: " + ",".join(os.listdir(fd))
            except OSError as exc:
                what += f" unlisted: {exc.strerror}"
            open_sockets.append((fd, 0, what))
            continue
        try:
            open_sockets.append((fd, s.family, str(s.getsockname())))
        finally:
            s.detach()
    found["sockets"] = open_sockets
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        found["gcs"] = "connected"
    except Exception as exc:
        found["gcs"] = f"refused: {type(exc).__name__}"
    # Every folder on the path is readable: look for what Ray keeps near them.
    near = {}
    for entry in sys.path:
        for pattern in ("../*", "../../*"):
            with contextlib.suppress(Exception):
                near[entry + pattern] = sorted(glob.glob(os.path.join(entry, pattern)))[:10]
    found["near"] = near
    return json.dumps(found)


def _session_dir() -> str:
    import ray

    return ray._private.worker._global_node.get_session_dir_path()


def _probe(ray_cluster, ray_host, **options):
    host = ray_host(
        num_cpus=0.25,
        runtime_env={"env_vars": {"AGEX_ATTACK_KEY": SECRET}},
        **options,
    )
    agent = Agent(host=host, llm=scripted("task_success(probe(targets, gcs))"))
    agent.fn(probe)

    @agent.task
    def look(targets: list, gcs: str) -> str:
        """Look around."""

    session = _session_dir()
    targets = [
        os.path.expanduser("~/.ray/auth_token"),
        "/tmp/ray",
        session,
        os.path.join(session, "sockets"),
        os.path.join(session, "runtime_resources"),
        os.getcwd(),
        os.path.join(os.getcwd(), "pyproject.toml"),
        os.path.expanduser("~"),
    ]
    return json.loads(look(targets, ray_cluster.address))


def test_the_worker_environment_holds_no_secret(ray_cluster, ray_host):
    """A key given to the host in env_vars is the runner's, never agent code's."""
    found = _probe(ray_cluster, ray_host)
    assert SECRET not in json.dumps(found["env"])
    assert not [k for k in found["env"] if k.startswith(("RAY_", "AGEX_"))], found["env"]


def test_the_worker_reaches_neither_token_nor_session_nor_caller(ray_cluster, ray_host):
    """Ray's auth token, its session directory (sockets, logs, others' runtime resources),
    and the caller's working directory stay out of reach."""
    found = _probe(ray_cluster, ray_host)
    opened = {t: r for t, r in found["reads"].items() if not r.startswith("refused")}
    assert not opened, json.dumps({"opened": opened, "path": found["path"]}, indent=1)
    assert SECRET not in json.dumps(found["reads"])


def test_the_worker_cannot_connect_to_the_cluster(ray_cluster, ray_host):
    """No socket to the GCS: the worker's network namespace has none."""
    found = _probe(ray_cluster, ray_host)
    assert found["gcs"].startswith("refused"), found["gcs"]


def test_the_worker_inherits_no_descriptor_but_its_channel(ray_cluster, ray_host):
    """Nothing of the runner or the template stays open in the worker: an open directory
    (the template's trash, where ended workers' scratch directories go) can be listed
    whatever Landlock says, since Landlock checks only at open."""
    found = _probe(ray_cluster, ray_host)
    assert [s[1] for s in found["sockets"]] == [1], found["sockets"]  # its own channel


def test_the_paths_the_worker_may_read_hold_nothing_of_rays_session(ray_cluster, ray_host):
    """Landlock opens every sys.path entry: none may be Ray's session directory or above it,
    and what lies beside them (other jobs' uploaded modules) must not be readable."""
    found = _probe(ray_cluster, ray_host)
    session = _session_dir()
    above = [p for p in found["path"] if session.startswith(p.rstrip("/") + "/") or p == session]
    assert not above, found["path"]
    leaked = {k: v for k, v in found["near"].items() if any("session_" in x for x in v)}
    assert not leaked, json.dumps(leaked, indent=1)


def spin() -> int:
    """Burn CPU forever."""
    while True:
        pass


def test_a_cpu_loop_ends_at_the_hosts_timeout(ray_cluster, ray_host):
    """A run that never yields is stopped at its timeout, not left burning the runner's CPU."""
    host = ray_host(num_cpus=0.25, timeout=5)
    agent = Agent(host=host, llm=scripted("task_success(spin())"))
    agent.fn(spin)

    @agent.task
    def burn() -> int:
        """Burn."""

    start = time.monotonic()
    with pytest.raises(TaskTimeout):
        burn()
    assert time.monotonic() - start < 90


def shout(megabytes: int) -> int:
    """Print a lot."""
    line = "x" * 1023
    for _ in range(megabytes * 1024):
        print(line)
    return megabytes


def test_huge_output_does_not_sink_the_runner(ray_cluster, ray_host):
    """Output a run prints is bounded before it reaches the runner's memory and the caller."""
    host = ray_host(num_cpus=0.25, timeout=120)
    agent = Agent(host=host, llm=scripted("task_success(shout(64))", "task_success(0)"))
    agent.fn(shout)

    @agent.task
    def loud() -> int:
        """Loud."""

    events: list = []
    agent2 = Agent(host=host, llm=scripted("task_success(1)"))

    @agent2.task
    def quiet() -> int:
        """Quiet."""

    assert loud(on_event=events.append) == 64
    size = sum(len(str(e)) for e in events)
    assert size < 16 << 20, f"{size} bytes of events reached the caller"
    assert quiet() == 1  # the runner still serves other runs


def rummage(name: str) -> str:
    """What the worker's memory holds under ``name``: the loaded task, its agent, its host."""
    import gc

    seen = []
    for found in gc.get_objects():
        kind = type(found).__name__
        if kind in ("RayHost", "Options", "Agent", "Task"):
            seen.append(kind)
        if kind == "Agent":
            seen.append(repr(getattr(found, "_configs", None))[:2000])
        if kind == "Options" and hasattr(found, "runtime_env"):
            for key, value in found.runtime_env:
                if key == "env_vars" and name in value:
                    return value[name]
    return "seen: " + ",".join(sorted(set(seen)))


def test_the_hosts_runtime_env_secrets_do_not_reach_the_worker(ray_cluster, ray_host):
    """A key given to the host in runtime_env env_vars (an API key, AGEX_POSTGRES_URL) is for
    the runner; the payload the confined worker loads must not carry it (the agent's host
    travels pickled with the task)."""
    found = _probe_memory(ray_cluster, ray_host)
    assert found != SECRET
    assert SECRET not in found, found


def _probe_memory(ray_cluster, ray_host):
    host = ray_host(num_cpus=0.25, runtime_env={"env_vars": {"AGEX_ATTACK_KEY": SECRET}})
    agent = Agent(host=host, llm=scripted("task_success(rummage('AGEX_ATTACK_KEY'))"))
    agent.fn(rummage)

    @agent.task
    def dig() -> str:
        """Dig."""

    return dig()
