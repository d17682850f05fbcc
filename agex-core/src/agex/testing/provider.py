"""The base every contract suite shares: the provider resolves, and is listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from agex import plugins


class ProviderContract:
    """Subclass a kind's contract (not this) and set ``provider`` to your provider's name.

    Override :meth:`options` when the factory needs arguments (a path, a URL).
    """

    kind: ClassVar[str]
    provider: ClassVar[str]

    def options(self, tmp_path: Path) -> dict[str, Any]:
        """Keyword arguments for the provider's factory in one test."""
        return {}

    def create(self, tmp_path: Path, **overrides: Any) -> Any:
        """Build the provider the way users do: through the plugin registry."""
        return plugins.create(self.kind, self.provider, **{**self.options(tmp_path), **overrides})

    def test_resolves_to_exactly_one_provider(self) -> None:
        found = plugins.providers(self.kind).get(self.provider, ())
        sources = [p.source for p in found]
        assert len(found) == 1, f"{self.kind} {self.provider!r} registered by {sources}"

    def test_listed_as_loaded_by_its_plugin(self) -> None:
        provider = plugins.resolve(self.kind, self.provider)
        state = next(s for s in plugins.states() if s.name == provider.plugin)
        assert state.status == "loaded"
        assert provider in state.providers
