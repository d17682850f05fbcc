import importlib.util
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
