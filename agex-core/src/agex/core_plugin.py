"""Core's own providers, registered through the same hooks as any plugin's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex.hookspecs import hookimpl

if TYPE_CHECKING:
    from agex.registry import Registry


def _cloudpickle() -> Any:
    from agex.serializers import CloudpickleSerializer

    return CloudpickleSerializer()


def _memory() -> Any:
    from agex.storage.memory import MemoryStorage

    return MemoryStorage()


def _plugins_command() -> Any:
    from agex.cli.list_plugins import plugins

    return plugins


@hookimpl
def agex_register_serializers(registry: Registry) -> None:
    registry.register("cloudpickle", _cloudpickle)


@hookimpl
def agex_register_storages(registry: Registry) -> None:
    registry.register("memory", _memory)


@hookimpl
def agex_register_commands(commands: Registry) -> None:
    commands.register("plugins", _plugins_command)
