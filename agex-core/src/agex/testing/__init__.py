"""Test kit for provider authors: contract suites to subclass, and a plugin fixture.

A provider proves itself by subclassing its kind's contract in a ``Test*`` class::

    from agex.testing import StorageContract

    class TestRedisStorage(StorageContract):
        provider = "redis"

        def options(self, tmp_path):
            return {"url": "redis://localhost:6379/0"}

The ``register_plugin`` fixture (loaded automatically when agex-core is installed) adds an
in-process plugin for one test and removes it afterwards.
"""

from agex.testing.host import HostContract
from agex.testing.provider import ProviderContract
from agex.testing.serializer import SerializerContract
from agex.testing.storage import StorageContract

__all__ = ["HostContract", "ProviderContract", "SerializerContract", "StorageContract"]
