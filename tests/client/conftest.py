"""These tests describe an environment with the http client and without the server stack
(`pip install "agex-core[http]"`). nox's `client` session is one, and says so in
AGEX_EXPECT_EXTRAS; anywhere else (the development environment, a session that installs
the server) they are skipped, since there they would fail for the right reasons."""

from __future__ import annotations

import os

import pytest


def _why_not_here() -> str | None:
    raw = os.environ.get("AGEX_EXPECT_EXTRAS")
    if raw is None:
        return 'run through nox (nox -s "tests(client)"), which installs the client alone'
    extras = {e for e in raw.split(",") if e}
    if "http" not in extras or extras & {"server", "all"}:
        return f"this session installs agex-core[{raw}], not the http client alone"
    return None


@pytest.fixture(autouse=True)
def client_only() -> None:
    why = _why_not_here()
    if why is not None:
        pytest.skip(why)
