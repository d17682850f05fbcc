"""The ``agex`` command. Its subcommands are plugins' ``command`` providers, core's included."""

from __future__ import annotations

from typing import Any

import click

from agex import plugins
from agex.errors import UnknownProviderError
from agex.version import __version__


class _PluginCommands(click.Group):
    """A group whose commands are looked up in the plugin registry when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(plugins.providers("command"))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        try:
            command: Any = plugins.create("command", cmd_name)
        except UnknownProviderError:
            return None  # click reports "No such command", with the list in --help
        except Exception as exc:
            return _unavailable(cmd_name, str(exc))
        if not isinstance(command, click.Command):
            return _unavailable(
                cmd_name, f"its factory returned {type(command).__name__}, not a click.Command"
            )
        return command


def _unavailable(name: str, why: str) -> click.Command:
    """Stands in for a command that cannot be built, so `agex --help` still works and
    running it says why."""

    def fail() -> None:
        raise click.ClickException(f"the {name!r} command is unavailable: {why}")

    return click.Command(
        name,
        callback=fail,
        help=f"(unavailable) {why}",
        add_help_option=False,
        # Whatever it is given (`agex serve --port 8000`, `--help`), it says why it cannot run.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=_PluginCommands)
@click.version_option(__version__, prog_name="agex")
def cli() -> None:
    """agex: code agents whose loop runs here, on an agex server, or on Modal."""


def main() -> None:
    cli()
