"""Pytest fixtures, registered through the ``pytest11`` entry point of agex-core."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from agex import plugins


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., str]]:
    """Register in-process plugins for one test: ``register_plugin(obj, name=None)``.

    Each one is unregistered when the test ends, pass or fail, so no test leaks providers
    into the next.
    """
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        names.append(plugins.register(plugin, name))
        return names[-1]

    try:
        yield register
    finally:
        for name in reversed(names):
            plugins.unregister(name)


@pytest.fixture
def ship_test_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Send the test's own module by value with its tasks: it is not importable where they
    run (a server, a worker process), as a script's ``__main__`` is not."""
    import sys

    import cloudpickle

    module = sys.modules[request.module.__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)
