"""These tests need the example distributions installed from their folders, as
`nox -s "tests(thirdparty)"` does; elsewhere they are skipped."""

from importlib import metadata

import pytest

from agex import plugins

EXAMPLES = [
    "agex-example-shelf",
    "agex-example-clash",
    "agex-example-broken",
    "agex-example-subprocess",
]


def pytest_collection_modifyitems(config, items):
    try:
        for dist in EXAMPLES:
            metadata.distribution(dist)
    except metadata.PackageNotFoundError as exc:
        why = f"{exc.name} is not installed; run nox -s 'tests(thirdparty)'"
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if "thirdparty" in str(item.path):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """Each test starts from a fresh scan with only the well-behaved example switched on;
    a test that wants the others switches them on itself."""
    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", "agex-example-clash,agex-example-broken")
    monkeypatch.delenv("AGEX_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()
