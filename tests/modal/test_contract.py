"""The modal host meets the host contract, and its storages the storage contract, against
the fake Modal: the host with ephemeral, memory-tier and disk-tier state; the Volume
storage both through Modal's API (as on a client) and through a container's mount."""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

import pytest

from agex import connect_host, connect_state
from agex.testing import HostContract, StorageContract
from agex_host_modal.storage import mount_point
from agex_host_modal.testing.api import _container, _Spec
from agex_host_modal.testing.containers import ThreadContainer


class TestModalHost(HostContract):
    provider = "modal"

    @pytest.fixture
    def host(self, fake):
        return connect_host(provider="modal", secrets="llm-keys")


class TestModalHostWithMemoryState(TestModalHost):
    def state(self, tmp_path):
        return connect_state(type="versioned", storage="memory")


class TestModalHostWithDiskState(TestModalHost):
    def state(self, tmp_path):
        return connect_state(type="versioned", storage="disk", path="contract-state")


class TestModalDictStorage(StorageContract):
    provider = "modal-dict"
    persistent = True

    @pytest.fixture(autouse=True)
    def _fake(self, fake):
        return fake

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": "contract-dict"}


class TestModalVolumeStorage(TestModalDictStorage):
    """Outside a container: files go through the Volume's API."""

    provider = "modal-volume"

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": "contract-volume"}


class TestModalVolumeStorageMounted(TestModalVolumeStorage):
    """Inside a container that mounts the Volume: files go through the mount, committed
    after every write."""

    @pytest.fixture(autouse=True)
    def _fake(self, fake_threads):
        fake = fake_threads
        volume = fake.Volume.from_name("contract-volume", create_if_missing=True)
        spec = _Spec(lambda: None, {"volumes": {mount_point("contract-volume"): volume}})
        container = ThreadContainer(fake, spec)
        token = _container.set(container)
        try:
            yield fake
        finally:
            _container.reset(token)

    def test_writes_go_through_the_mount(self, storage, fake_threads):
        fake = fake_threads
        storage.put_many({"b/one": b"1"})
        folder = fake.root / "container-0" / mount_point("contract-volume").strip("/")
        (pack,) = (folder / "+packs" / "0").iterdir()  # the write's values, in one file
        assert pack.read_bytes().endswith(b"1")
        assert fake.volumes["contract-volume"][f"+packs/0/{pack.name}"] == pack.read_bytes()
        assert contextvars.copy_context().get(_container) is not None
