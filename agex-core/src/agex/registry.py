"""What a plugin's collector hook receives, and the record of one registration."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

#: Provider kinds, each with the hook that collects it.
HOOKS = {
    "host": "agex_register_hosts",
    "storage": "agex_register_storages",
    "serializer": "agex_register_serializers",
    "llm": "agex_register_llms",
    "command": "agex_register_commands",
}

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


class Provider(NamedTuple):
    """One registered provider: ``factory(**options)`` builds it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    version: str | None

    @property
    def source(self) -> str:
        """The distribution that registered it, with its version when known."""
        return f"{self.distribution} {self.version}" if self.version else self.distribution


class Registry:
    """Collects one plugin's providers of one kind.

    Registration is all or nothing per plugin and hook: if the hook raises, nothing it
    registered is kept, and the plugin is reported as failed.
    """

    def __init__(self, kind: str, plugin: str, distribution: str, version: str | None) -> None:
        self.kind = kind
        self._plugin = plugin
        self._distribution = distribution
        self._version = version
        self.providers: list[Provider] = []

    def register(self, name: str, factory: Callable[..., Any]) -> None:
        """Offer ``factory`` as the provider called ``name``.

        ``name`` is lower case: letters, digits, ``.``, ``_`` and ``-``. ``factory`` is called
        only when the provider is used, so import heavy SDKs inside it.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"{self._distribution}: {self.kind} provider name {name!r} is not valid; use "
                "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
        if not callable(factory):
            raise TypeError(
                f"{self._distribution}: the factory for {self.kind} provider {name!r} must be "
                f"callable, got {type(factory).__name__}"
            )
        self.providers.append(
            Provider(
                self.kind,
                name,
                factory,
                self._plugin,
                self._distribution,
                self._version,
            )
        )
