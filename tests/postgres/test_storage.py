"""Storage "postgres" passes the contract every storage meets, on a real PostgreSQL server."""

import uuid
from pathlib import Path

import pytest

from agex.testing import StorageContract


class TestPostgresStorage(StorageContract):
    provider = "postgres"
    persistent = True

    @pytest.fixture(autouse=True)
    def _database(self, pg_env):
        self.name = f"contract/{uuid.uuid4().hex}"

    def options(self, tmp_path: Path) -> dict:
        return {"path": self.name}
