"""The exceptions agex raises, in one place so callers can catch them by type."""

from __future__ import annotations

from collections.abc import Sequence


class AgexError(Exception):
    """Base of every error agex raises on purpose."""


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded, or a plugin setting names nothing installed."""


class ProviderError(AgexError):
    """A provider name could not be turned into exactly one provider."""


class UnknownProviderError(ProviderError, ValueError):
    """No installed plugin registers a provider of that kind under that name."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = name


class ProviderNotInstalledError(ProviderError, ImportError):
    """The provider is ours, but the distribution that supplies it is not installed.

    It is an ImportError, so code that already guards optional imports catches it.
    """

    def __init__(self, kind: str, name: str, distribution: str, install: str) -> None:
        super().__init__(
            f"{kind} provider {name!r} is supplied by {distribution}, which is not installed. "
            f"Install it with: {install}",
            name=distribution.replace("-", "_"),
        )
        self.kind = kind
        self.provider = name
        self.distribution = distribution
        self.install = install


class DuplicateProviderError(ProviderError):
    """Two plugins registered the same provider name; agex will not guess which one you meant."""

    def __init__(self, kind: str, name: str, sources: Sequence[str]) -> None:
        both = " and ".join(sources)
        super().__init__(
            f"{kind} provider {name!r} is registered by {both}. Uninstall one of them, or "
            f"turn one off with AGEX_DISABLE_PLUGINS=<distribution>."
        )
        self.kind = kind
        self.provider = name
        self.sources = tuple(sources)
