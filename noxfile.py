"""Sessions: the test matrix (core alone, core with each plugin, everything, a third-party
plugin), lint, typecheck and bench.

Every session installs the distributions for real (built wheels, not editable), the way a
user gets them, so a missing file or dependency fails here rather than after a release.
"""

from __future__ import annotations

import os
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
    "http": (["http"], ["http", "e2e"]),
    "modal": (["modal"], ["modal"]),
    "disk": (["disk"], ["disk"]),
    "all": (["all"], ["http", "modal", "disk", "e2e"]),
    "thirdparty": (
        [str(EXAMPLES / f"agex-example-{d}") for d in ("shelf", "clash", "broken")],
        ["thirdparty"],
    ),
}
OURS = {
    "http": ["agex-host-http"],
    "modal": ["agex-host-modal"],
    "disk": ["agex-state-disk"],
    "all": ["agex-host-http", "agex-host-modal", "agex-state-disk"],
}


def _install_agex(session: nox.Session, extras: list[str]) -> list[str]:
    """Install agex-core with ``extras`` from this checkout; returns the plugin
    distributions installed (ours and folders)."""
    ours = [d for e in extras for d in OURS.get(e, [])]
    folders = [e for e in extras if e not in OURS]
    core = "./agex-core" + (f"[{','.join(e for e in extras if e in OURS)}]" if ours else "")
    session.install(core, *(f"./{d}" for d in ours), *folders)
    return ours + [Path(f).name for f in folders]


@nox.session
@nox.parametrize("combo", list(MATRIX), ids=list(MATRIX))
def tests(session: nox.Session, combo: str) -> None:
    """Run the tests against core plus one combination of plugins."""
    extras, folders = MATRIX[combo]
    installed = _install_agex(session, extras)
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"))
    session.env["AGEX_EXPECT_DISTRIBUTIONS"] = ",".join(installed)
    if combo == "thirdparty":
        # Broken on purpose: only the tests about it switch it on.
        session.env["AGEX_DISABLE_PLUGINS"] = "agex-example-broken"
    paths = ["tests/core", "tests/contracts"] + [
        f"tests/{f}" for f in folders if (ROOT / "tests" / f).is_dir()
    ]
    session.run("pytest", *paths, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
        "agex-state-disk/src/agex_state_disk",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints our figure beside its goal and, where a peer installs, the
    peer's figure measured in the same run."""
    # Compile bytecode at install, as pip does: uv does not by default, and timing imports
    # that compile from source would measure the compiler.
    session.env["UV_COMPILE_BYTECODE"] = "1"
    _install_agex(session, ["all"])
    peer = _peer_python(session)
    if peer:
        session.env["AGEX_PEER_PYTHON"] = peer
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    wanted = set(session.posargs)
    for script in scripts:
        if not wanted or script.stem.removeprefix("bench_") in wanted:
            session.run("python", str(script))


def _peer_python(session: nox.Session) -> str | None:
    """agex 0.12.4 in a virtual environment of its own (it shares our import name)."""
    venv = Path(session.cache_dir) / "agex-0.12.4"
    python = venv / "bin" / "python"
    if not python.exists():
        try:
            session.run("uv", "venv", "--quiet", str(venv), external=True)
            session.run(
                "uv",
                "pip",
                "install",
                "--quiet",
                "--python",
                str(python),
                "agex==0.12.4",
                external=True,
            )
            # Offline it would try to download tokenizer data; without tiktoken it falls
            # back to an approximate count.
            session.run(
                "uv",
                "pip",
                "uninstall",
                "--quiet",
                "--python",
                str(python),
                "tiktoken",
                external=True,
            )
        except nox.command.CommandFailed:
            session.warn("agex 0.12.4 could not be installed; its figures are left out")
            return None
    return str(python) if os.access(python, os.X_OK) else None
