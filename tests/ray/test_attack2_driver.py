"""Attacks on runners from another driver of the cluster, after runners took a secret from
the process that made them: a run is refused without it, but a runner is a named actor that
any driver can find, and Ray lets whoever holds an actor's handle do more than call ``run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from agex import Agent
from agex.testing.host import scripted

KEY = "agex-attack2-driver-key"


def _one_runner(ray_host) -> None:
    """A runner of this process, idle for its scaledown window, holding ``KEY``."""
    host = ray_host(num_cpus=0.25, runtime_env={"env_vars": {"ATTACK2_API_KEY": KEY}})
    agent = Agent(name="attack2-driver", host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    assert one() == 1


def _other_driver(ray_cluster, script: str) -> dict:
    """Run ``script`` as another driver of the cluster (a process of its own); what it
    printed last, as JSON."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    head = textwrap.dedent(
        """
        import json, os, ray
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")
        runners = [
            ray.get_actor(e["name"], namespace="agex")
            for e in ray.util.list_named_actors(all_namespaces=True)
            if e.get("namespace") == "agex" and e.get("name", "").startswith("agex-runner-")
        ]
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", head + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(lines[-1])


def test_another_driver_cannot_read_the_secret_or_keys_with_ray_call(ray_cluster, ray_host):
    """``__ray_call__`` runs a function of the caller's on the actor instance: another
    driver must not get the runner's secret (and with it runs on the owner's keys) nor the
    keys themselves."""
    _one_runner(ray_host)
    found = _other_driver(
        ray_cluster,
        """
        seen = []
        for actor in runners:
            try:
                seen.append(ray.get(actor.__ray_call__.remote(
                    lambda runner: [runner.secret, os.environ.get("ATTACK2_API_KEY")]
                ), timeout=30))
            except Exception as exc:
                seen.append(f"refused: {type(exc).__name__}")
        print(json.dumps({"seen": seen}))
        """,
    )
    from agex_host_ray import cluster

    secrets = {r.secret for rs in cluster._runners.values() for r in rs}
    told = json.dumps(found)
    assert KEY not in told, found
    assert not [s for s in secrets if s in told], found


def test_another_driver_cannot_run_code_in_a_runner_before_the_secret_check(ray_cluster, ray_host):
    """Ray unpickles a call's arguments before the method (and its secret check) runs: an
    argument whose unpickling runs code runs it in the runner, which holds the keys."""
    _one_runner(ray_host)
    out = tempfile.mkdtemp(prefix="agex-attack2-")
    os.chmod(out, 0o777)
    found = _other_driver(
        ray_cluster,
        f"""
        class Loot:
            def __reduce__(self):
                grab = (
                    "import os; open({out!r} + '/loot-%d' % os.getpid(), 'w')"
                    ".write(os.environ.get('ATTACK2_API_KEY', ''))"
                )
                return (exec, (grab,))

        answers = []
        for actor in runners:
            ref = actor.run.options(num_returns="streaming").remote({{}}, b"", [], Loot())
            try:
                answers.append([ray.get(r, timeout=30) for r in ref])
            except Exception as exc:
                answers.append(f"error: {{type(exc).__name__}}")
        print(json.dumps({{"answers": answers}}))
        """,
    )
    looted = ""
    for name in os.listdir(out):
        with open(os.path.join(out, name)) as f:
            looted += f.read()
    assert KEY not in looted, (looted, found)


def test_another_driver_cannot_read_a_runners_keys_from_proc(ray_cluster, ray_host):
    """A plain Ray task of another driver runs as the same user on the runner's node: the
    keys given to the host in env_vars sit in the runner's /proc/<pid>/environ."""
    _one_runner(ray_host)
    found = _other_driver(
        ray_cluster,
        """
        @ray.remote(num_cpus=0)
        def look(key):
            hits = []
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/environ", "rb") as f:
                            if key.encode() in f.read():
                                hits.append(pid)
                    except OSError:
                        pass
            return hits

        print(json.dumps({"hits": ray.get(look.remote("ATTACK2_API_KEY=" + "agex-attack2"))}))
        """,
    )
    assert not found["hits"], found
