"""The entry point agex loads for agex-state-postgres (group `agex`): storage "postgres".

Only `agex` is imported here; psycopg loads when a storage is made.
"""

from typing import Any

from agex import hookimpl


def make_postgres(
    path: str | None = None,
    url: str | None = None,
    timeout: float = 30.0,
    pool_size: int = 10,
) -> Any:
    """As :class:`PostgresStorage` takes them. ``url`` is for a server's own database
    (``agex serve --state-url``): an agent's state configuration never carries one."""
    from agex_state_postgres.storage import PostgresStorage

    return PostgresStorage(path, url=url, timeout=timeout, pool_size=pool_size)


@hookimpl
def agex_register_storages(registry: Any) -> None:
    registry.register("postgres", make_postgres)
