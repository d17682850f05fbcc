"""The local host meets the host contract."""

from agex.testing import HostContract


class TestLocalHost(HostContract):
    provider = "local"
