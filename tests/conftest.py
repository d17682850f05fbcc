import contextlib
import importlib.util
import os
import uuid
from pathlib import Path
from types import ModuleType

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def fake_llm() -> ModuleType:
    """The loopback model server that speaks the providers' wire formats
    (tests/core/agent/fake_llm_server.py), for tests in other folders."""
    path = Path(__file__).parent / "core" / "agent" / "fake_llm_server.py"
    spec = importlib.util.spec_from_file_location("agex_tests_fake_llm_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The storages versioned state is tested on: memory, and each installed one.
STORAGES = ["memory"] + [
    name
    for name, module in (("disk", "agex_state_disk"), ("postgres", "agex_state_postgres"))
    if importlib.util.find_spec(module)
]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this test session, started from the PostgreSQL programs
    on the machine in a temporary directory, and removed afterwards. Skipped, with the
    reason, only where those programs are missing and AGEX_REQUIRE_POSTGRES is unset (CI
    sets it: there, a missing server fails)."""
    local = pytest.importorskip("agex_state_postgres.local")
    try:
        server = local.LocalServer(fsync=False)
    except RuntimeError as exc:
        if os.environ.get("AGEX_REQUIRE_POSTGRES"):
            raise
        pytest.skip(str(exc))
    server.start()
    yield server
    server.remove()


@pytest.fixture
def state_path(request, tmp_path, monkeypatch):
    """``state_path(storage)``: a path for a test's versioned state in that storage (None:
    the storage needs none), the storage set up for it (for postgres, the session's server
    in AGEX_POSTGRES_URL). Storages made for it are closed afterwards."""
    made = []

    def path_for(storage: str) -> str | None:
        if storage == "memory":
            return None
        if storage == "disk":
            path = str(tmp_path / f"state-{len(made)}")
        else:
            monkeypatch.setenv("AGEX_POSTGRES_URL", request.getfixturevalue("postgres").url)
            path = f"tests/{uuid.uuid4().hex}"
        made.append((storage, path))
        return path

    yield path_for
    from agex import connect_state
    from agex.stores import LOCAL

    for storage, path in made:
        with contextlib.suppress(Exception):
            LOCAL.storage(connect_state(type="versioned", storage=storage, path=path)).close()
