"""The http host meets the host contract, against a real server, with ephemeral state and
with versioned disk state on the server."""

from __future__ import annotations

import pytest

from agex import connect_host, connect_state
from agex.testing import HostContract


class TestHttpHost(HostContract):
    provider = "http"

    @pytest.fixture
    def host(self, server):
        return connect_host(provider="http", url=server.url, token=server.token)


class TestHttpHostWithDiskState(TestHttpHost):
    def state(self, tmp_path):
        return connect_state(type="versioned", storage="disk", path="/contract")
