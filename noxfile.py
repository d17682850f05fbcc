"""Sessions: the test matrix (core alone, core with each plugin, the http client without
the server, everything, a third-party plugin), lint, typecheck and bench.

Every session installs the distributions for real (built wheels, not editable), the way a
user gets them, so a missing file or dependency fails here rather than after a release.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.error_on_external_run = True
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
EXAMPLES = ROOT / "tests" / "thirdparty"

#: What each test session installs (core extra, or a folder), and the test folders it runs.
MATRIX: dict[str, tuple[list[str], list[str]]] = {
    "core": ([], []),
    # The http host alone, as a machine that only calls a server installs it.
    "client": (["http"], ["client"]),
    # Its tests start servers.
    "http": (["http", "server"], ["http", "e2e"]),
    "modal": (["modal"], ["modal"]),
    "disk": (["disk"], ["disk"]),
    # Its tests start a PostgreSQL server, and agex servers on it; the core's state tests
    # run on it too.
    "postgres": (["postgres", "server"], ["postgres"]),
    # Its tests start a Ray cluster (a head and a second node) and keep state in PostgreSQL.
    "ray": (["ray", "postgres"], ["ray"]),
    "all": (["all"], ["http", "modal", "ray", "disk", "postgres", "e2e"]),
    "thirdparty": (
        [str(EXAMPLES / f"agex-example-{d}") for d in ("shelf", "clash", "broken", "subprocess")],
        ["thirdparty"],
    ),
}
OURS = {
    "http": ["agex-host-http", "agex-state-disk"],  # http needs disk state
    "server": ["agex-host-http", "agex-state-disk"],
    "modal": ["agex-host-modal", "agex-state-disk"],  # modal names disk state too
    "disk": ["agex-state-disk"],
    "postgres": ["agex-state-postgres"],
    "ray": ["agex-host-ray", "agex-state-disk"],  # ray names disk state too
    "all": [
        "agex-host-http",
        "agex-host-modal",
        "agex-host-ray",
        "agex-state-disk",
        "agex-state-postgres",
    ],
}


def _install_agex(session: nox.Session, extras: list[str]) -> list[str]:
    """Install agex-core with ``extras`` from this checkout; returns the plugin
    distributions installed (ours and folders)."""
    ours = list(dict.fromkeys(d for e in extras for d in OURS.get(e, [])))
    folders = [e for e in extras if e not in OURS]
    core = "./agex-core" + (f"[{','.join(e for e in extras if e in OURS)}]" if ours else "")
    # --no-sources: without it uv installs workspace members editable, from the checkout.
    session.install("--no-sources", core, *(f"./{d}" for d in ours), *folders)
    return ours + [Path(f).name for f in folders]


@nox.session
@nox.parametrize("combo", list(MATRIX), ids=list(MATRIX))
def tests(session: nox.Session, combo: str) -> None:
    """Run the tests against core plus one combination of plugins."""
    extras, folders = MATRIX[combo]
    installed = _install_agex(session, extras)
    groups = ["test", "test-http"] if {"http", "postgres", "ray"} & set(folders) else ["test"]
    session.install(*nox.project.dependency_groups(PYPROJECT, *groups))
    session.env["AGEX_EXPECT_DISTRIBUTIONS"] = ",".join(installed)
    # Which of core's extras, so that a test can tell the http client alone from the server.
    session.env["AGEX_EXPECT_EXTRAS"] = ",".join(e for e in extras if e in OURS)
    if combo == "thirdparty":
        # Broken on purpose: only the tests about it switch it on.
        session.env["AGEX_DISABLE_PLUGINS"] = "agex-example-broken"
    paths = ["tests/core", "tests/contracts"] + [
        f"tests/{f}" for f in folders if (ROOT / "tests" / f).is_dir()
    ]
    if {"postgres", "ray"} & set(folders):
        # Where PostgreSQL is missing, its tests fail here rather than skip.
        session.env["AGEX_REQUIRE_POSTGRES"] = "1"
    session.run("pytest", *paths, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting; import-linter: the import contracts in .importlinter."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.install("import-linter>=2.1")
    # It reads the import graph from the sources without importing them, but finds the
    # packages on the path: every distribution's src folder, nothing installed.
    sources = os.pathsep.join(str(src) for src in sorted(ROOT.glob("agex-*/src")))
    session.run("lint-imports", env={"PYTHONPATH": sources})


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over every distribution's source."""
    _install_agex(session, ["all"])
    session.install(*nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run(
        "mypy",
        "agex-core/src/agex",
        "agex-host-http/src/agex_host_http",
        "agex-host-modal/src/agex_host_modal",
        "agex-host-ray/src/agex_host_ray",
        "agex-state-disk/src/agex_state_disk",
        "agex-state-postgres/src/agex_state_postgres",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints our figure beside its goal and, where a peer installs, the
    peer's figure measured in the same run."""
    # Compile bytecode at install, as pip does: uv does not by default, and timing imports
    # that compile from source would measure the compiler.
    session.env["UV_COMPILE_BYTECODE"] = "1"
    _install_agex(session, ["all"])
    session.install("httpx>=0.27")  # the scripts' own requests (health checks)
    peers = {
        # agex 0.12.4 shares our import name, so it gets an environment of its own, with its
        # server for the http figures and its sandbox's process isolation (seccomp and
        # Landlock bindings) for the isolation figures. Offline it would try to download
        # tokenizer data; without tiktoken it counts approximately.
        "AGEX_PEER_PYTHON": _peer_python(
            session,
            "agex-0.12.4-peer",
            ["agex[server,http]==0.12.4", "sandtrap[process]"],
            ["tiktoken"],
        ),
        "AGEX_SMOLAGENTS_PYTHON": _peer_python(session, "smolagents", ["smolagents"], []),
    }
    session.env.update({var: python for var, python in peers.items() if python})
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    wanted = set(session.posargs)
    for script in scripts:
        if not wanted or script.stem.removeprefix("bench_") in wanted:
            session.run("python", str(script))


def _peer_python(
    session: nox.Session, name: str, requirements: list[str], without: list[str]
) -> str | None:
    """A peer project in a virtual environment of its own, for side-by-side figures."""
    venv = Path(session.cache_dir) / name
    python = venv / "bin" / "python"
    if not python.exists():
        try:
            session.run("uv", "venv", "--quiet", str(venv), external=True)
            pip = ["uv", "pip", "--quiet"]
            session.run(*pip, "install", "--python", str(python), *requirements, external=True)
            if without:
                session.run(*pip, "uninstall", "--python", str(python), *without, external=True)
        except nox.command.CommandFailed:
            shutil.rmtree(venv, ignore_errors=True)
            session.warn(f"{name} could not be installed; its figures are left out")
            return None
    return str(python) if os.access(python, os.X_OK) else None
