"""The hooks a plugin implements. Each is a collector: it receives a registry and calls
``registry.register(name, factory)`` once per provider it offers.

The registry is an object rather than a bare callable so that later versions can give it
more methods without breaking plugins written today.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from agex.registry import Registry

hookspec = pluggy.HookspecMarker("agex")
hookimpl = pluggy.HookimplMarker("agex")


@hookspec
def agex_register_hosts(registry: Registry) -> None:
    """Register host providers: where an agent's loop runs.

    ``registry.register("name", factory)``; ``connect_host(provider="name", **kwargs)``
    calls ``factory(**kwargs)`` and returns what it returns.
    """


@hookspec
def agex_register_storages(registry: Registry) -> None:
    """Register state storages: byte stores with get, put_many, delete,
    compare_and_set and keys (see ``agex.storage.Storage``).

    The factory is called with the storage's options (for example ``path=``).
    """


@hookspec
def agex_register_serializers(registry: Registry) -> None:
    """Register serializers: objects with ``dumps(obj) -> bytes`` and ``loads(bytes)``.

    The factory is called with no arguments.
    """


@hookspec
def agex_register_llms(registry: Registry) -> None:
    """Register LLM providers. ``connect_llm(provider="name", model=..., **kwargs)``
    calls ``factory(model=..., **kwargs)``.
    """


@hookspec
def agex_register_commands(commands: Registry) -> None:
    """Register ``agex`` subcommands. The factory takes no arguments and returns a
    ``click.Command``; import click and anything heavy inside it, not at module level.
    """
