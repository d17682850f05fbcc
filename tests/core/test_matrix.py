"""Each nox session installs a set of plugin distributions and says which in
AGEX_EXPECT_DISTRIBUTIONS; agex must discover exactly those, with exactly their providers."""

import os
import warnings

import pytest

from agex import plugins

CORE = {
    ("command", "demo"),
    ("command", "plugins"),
    ("command", "state"),
    ("host", "local"),
    ("llm", "anthropic"),
    ("llm", "gemini"),
    ("llm", "openai"),
    ("llm", "scripted"),
    ("serializer", "cloudpickle"),
    ("storage", "memory"),
}
#: What each distribution registers. Grows as providers land.
REGISTERS: dict[str, set[tuple[str, str]]] = {
    "agex-host-http": {("host", "http"), ("command", "serve")},
    "agex-host-modal": {("host", "modal"), ("storage", "modal-dict"), ("storage", "modal-volume")},
    "agex-host-ray": {("host", "ray")},
    "agex-state-disk": {("storage", "disk")},
    "agex-state-postgres": {("storage", "postgres")},
    "agex-example-shelf": {("storage", "shelf")},
    "agex-example-clash": {("storage", "shelf")},
    "agex-example-broken": set(),
    "agex-example-subprocess": {("host", "subprocess")},
}
BROKEN = {"agex-example-broken"}


@pytest.fixture
def expected() -> set[str]:
    raw = os.environ.get("AGEX_EXPECT_DISTRIBUTIONS")
    if raw is None:
        pytest.skip("run through nox, which says what it installed")
    return {d for d in raw.split(",") if d}


def test_installed_for_real_not_editable(expected: set[str]) -> None:
    import agex

    assert "site-packages" in agex.__file__, agex.__file__


def test_discovers_exactly_what_was_installed(expected: set[str], monkeypatch) -> None:
    monkeypatch.delenv("AGEX_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("AGEX_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        states = plugins.states()
    plugins.reset()

    installed = {s.distribution for s in states if s.origin == "entry point"}
    assert installed == expected

    status = {s.distribution: s.status for s in states if s.origin == "entry point"}
    assert status == {d: "failed" if d in BROKEN else "loaded" for d in expected}

    registered = {(s.distribution, p.kind, p.name) for s in states for p in s.providers}
    want = {("agex-core", *p) for p in CORE}
    want |= {(d, *p) for d in expected for p in REGISTERS[d]}
    assert registered == want
