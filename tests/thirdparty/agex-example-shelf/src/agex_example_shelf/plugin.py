"""Registers storage "shelf". Only agex is imported here; the storage loads when used."""

from typing import Any

from agex import hookimpl


def make_shelf(path: str) -> Any:
    from agex_example_shelf.storage import ShelfStorage

    return ShelfStorage(path)


@hookimpl
def agex_register_storages(registry: Any) -> None:
    registry.register("shelf", make_shelf)
