import pytest


@pytest.fixture(autouse=True)
def only_core_plugins(monkeypatch):
    """The suites under test run against in-process plugins; installed ones stay out."""
    monkeypatch.setenv("AGEX_LOAD_PLUGINS", "")
