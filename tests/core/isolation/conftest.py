import pytest


@pytest.fixture(autouse=True)
def _send_test_modules_by_value(ship_test_module: None) -> None:
    """Test modules are not importable in a worker process."""
