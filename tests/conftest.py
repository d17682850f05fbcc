import importlib.util
import os
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


#: The storage the loop's state tests keep versioned state in (tests/core/state): memory,
#: unless the postgres session runs them again against a real database.
STATE_STORAGE_ENV = "AGEX_TEST_STORAGE"


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


@pytest.fixture(scope="session", autouse=True)
def _state_storage(request):
    """With AGEX_TEST_STORAGE=postgres, the database the loop's state tests use."""
    if os.environ.get(STATE_STORAGE_ENV) != "postgres":
        yield
        return
    server = request.getfixturevalue("postgres")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGEX_POSTGRES_URL", server.url)
        yield
