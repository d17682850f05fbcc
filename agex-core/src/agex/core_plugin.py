"""Core's own providers, registered through the same hooks as any plugin's.

This module is the top of agex-core: the plugin manager loads it by name. Each factory
imports what it builds when it is first called, so that loading the plugin (on the first
provider lookup) stays cheap: the loop, the sandbox and click load only when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agex.errors import ProviderNotInstalledError
from agex.hookspecs import hookimpl
from agex.protocols import LLM, Host, Serializer, Storage

if TYPE_CHECKING:
    import click

    from agex.registry import Registry


def _cloudpickle() -> Serializer:
    from agex.serializers import CloudpickleSerializer

    return CloudpickleSerializer()


def _memory(path: str | None = None) -> Storage:
    """A new in-process store; ``path`` only names it (agex keeps one store per path)."""
    from agex.storage.memory import MemoryStorage

    return MemoryStorage()


def _local() -> Host:
    from agex.hosts.local import LocalHost

    return LocalHost()


def _scripted(
    responses: list[str],
    delay: float = 0.0,
    chunk_size: int | None = None,
    model: str | None = None,
    position: int = 0,
) -> LLM:
    """Its options spelled out, so that a missing or mistyped one is named."""
    from agex.llm.scripted import ScriptedLLM

    return ScriptedLLM(responses, delay, chunk_size, model, position)


def _sdk_llm(name: str, sdk: str, distribution: str, cls: str) -> Callable[..., LLM]:
    """The factory of the provider ``name`` in ``agex.llm.<name>``, whose SDK is the module
    ``sdk`` of ``distribution``."""

    def make(**options: Any) -> LLM:
        # Made first: its options are checked (no key in them) even where the SDK is absent.
        llm: LLM = getattr(importlib.import_module(f"agex.llm.{name}"), cls)(**options)
        if not _importable(sdk):
            raise ProviderNotInstalledError(
                "llm", name, distribution, f'pip install "agex-core[{name}]"'
            )
        return llm

    return make


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (``google`` of google.genai) is absent
        return False


def _demo_command() -> click.Command:
    from agex.cli.demo import demo

    return demo


def _plugins_command() -> click.Command:
    from agex.cli.list_plugins import plugins

    return plugins


def _state_command() -> click.Command:
    from agex.cli.check import state

    return state


@hookimpl
def agex_register_hosts(registry: Registry) -> None:
    registry.register("local", _local)


@hookimpl
def agex_register_serializers(registry: Registry) -> None:
    registry.register("cloudpickle", _cloudpickle)


@hookimpl
def agex_register_storages(registry: Registry) -> None:
    registry.register("memory", _memory)


@hookimpl
def agex_register_llms(registry: Registry) -> None:
    registry.register("scripted", _scripted)
    registry.register("openai", _sdk_llm("openai", "openai", "openai", "OpenAILLM"))
    registry.register("anthropic", _sdk_llm("anthropic", "anthropic", "anthropic", "AnthropicLLM"))
    registry.register("gemini", _sdk_llm("gemini", "google.genai", "google-genai", "GeminiLLM"))


@hookimpl
def agex_register_commands(commands: Registry) -> None:
    commands.register("plugins", _plugins_command)
    commands.register("demo", _demo_command)
    commands.register("state", _state_command)
