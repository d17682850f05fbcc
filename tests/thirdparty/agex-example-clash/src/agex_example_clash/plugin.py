"""Registers storage "shelf" too, so that two distributions claim one name."""

from typing import Any

from agex import hookimpl


def make_memory(**options: Any) -> Any:
    from agex.storage.memory import MemoryStorage

    return MemoryStorage()


@hookimpl
def agex_register_storages(registry: Any) -> None:
    registry.register("shelf", make_memory)
