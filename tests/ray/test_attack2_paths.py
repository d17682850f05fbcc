"""What agent code on a runner can read of the caller's project: Ray puts the caller's
working directory and its script's folder on a worker's import path; the runner hides its
own working directory, and agent code may read what is on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SECRET = "agex-attack2-project-secret"

SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    from agex import Agent, connect_host
    from agex.testing.host import scripted


    def peek(paths: list) -> str:
        out = {}
        for path in paths:
            try:
                with open(path) as f:
                    out[path] = f.read()
            except Exception as exc:
                out[path] = "refused: " + type(exc).__name__
        import sys as _s
        out["path"] = list(_s.path)
        try:
            out["cwd"] = os.getcwd()
        except Exception as exc:
            out["cwd"] = repr(exc)
        return json.dumps(out)


    agent = Agent(
        name="a2-paths",
        host=connect_host(provider="ray", num_cpus=0.1),
        llm=scripted("task_success(peek(paths))"),
    )
    agent.fn(peek)


    @agent.task
    def look(paths: list) -> str:
        \"\"\"Look.\"\"\"


    here = os.getcwd()
    print("FOUND " + look([os.path.join(here, "scripts", "notes.txt"), os.path.join(here, ".env")]))
    """
)


def test_agent_code_cannot_read_the_callers_project(ray_cluster, tmp_path):
    """The caller runs ``python scripts/run.py`` in its project, on a cluster started
    elsewhere (the runner's working directory is not the caller's): the project's ``.env``
    and its script's folder must stay hidden, as they are when both share a directory."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    (project / "scripts" / "run.py").write_text(SCRIPT)
    (project / "scripts" / "notes.txt").write_text(SECRET)
    (project / ".env").write_text(SECRET)
    for folder in (tmp_path, project, project / "scripts"):
        os.chmod(folder, 0o755)
    done = subprocess.run(
        [sys.executable, "scripts/run.py"],
        cwd=project,
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address},
        capture_output=True,
        text=True,
        timeout=200,
    )
    found = [line for line in done.stdout.splitlines() if line.startswith("FOUND ")]
    assert found, (done.stdout[-2000:], done.stderr[-3000:])
    assert SECRET not in found[-1], found[-1]
