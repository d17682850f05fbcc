"""The `agex` console script, run as users run it and through click's runner."""

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

import click
import pytest
from click.testing import CliRunner

from agex import hookimpl
from agex.cli import cli


def agex(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("agex", path=os.path.dirname(sys.executable))
    assert exe, "the agex console script is installed next to the interpreter"
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_console_script_lists_core_providers() -> None:
    result = agex("plugins")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS", "ERROR"]
    assert ["command", "plugins", "agex-core", "0.1.0", "ok"] in [r.split() for r in rows]
    assert ["storage", "memory", "agex-core", "0.1.0", "ok"] in [r.split() for r in rows]


def test_python_dash_m_agex() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agex", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"agex, version {metadata.version('agex-core')}"


def test_json_output_names_every_column() -> None:
    rows = json.loads(agex("plugins", "--json").stdout)
    assert {
        "kind": "serializer",
        "name": "cloudpickle",
        "distribution": "agex-core",
        "version": "0.1.0",
        "status": "ok",
        "error": "",
    } in rows


def test_unknown_command() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_serve_without_the_http_plugin_says_what_to_install() -> None:
    try:
        metadata.distribution("agex-host-http")
    except metadata.PackageNotFoundError:
        pass
    else:
        pytest.skip("agex-host-http is installed in this session")
    result = agex("serve")
    assert result.returncode == 1
    assert 'pip install "agex-core[server]"' in result.stderr


class CommandPlugin:
    @hookimpl
    def agex_register_commands(self, commands):
        def make():
            @click.command()
            @click.argument("who")
            def greet(who):
                """Say hello."""
                click.echo(f"hello {who}")

            return greet

        commands.register("greet", make)
        commands.register("broken", lambda: "not a command")


def test_plugin_commands_join_the_cli(register_plugin) -> None:
    register_plugin(CommandPlugin(), name="greeter")
    runner = CliRunner()
    assert "greet" in runner.invoke(cli, ["--help"]).output
    result = runner.invoke(cli, ["greet", "world"])
    assert result.exit_code == 0
    assert result.output == "hello world\n"
    result = runner.invoke(cli, ["broken"])
    assert result.exit_code == 1
    assert "unavailable: its factory returned str, not a click.Command" in result.output


def test_failed_plugin_row_shows_its_error(register_plugin, recwarn) -> None:
    class Failing:
        @hookimpl
        def agex_register_hosts(self, registry):
            raise ImportError("No module named 'somesdk'")

    register_plugin(Failing(), name="failing")
    result = CliRunner().invoke(cli, ["plugins", "--verbose"])
    row = next(r for r in result.output.splitlines() if "failing" in r and "failed" in r)
    assert "ImportError: No module named 'somesdk'" in row
    assert "Traceback" in result.output
