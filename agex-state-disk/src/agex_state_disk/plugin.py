"""The entry point agex loads for agex-state-disk (group `agex`): storage "disk".

Only `agex` is imported here; the storage module loads when a disk storage is made.
"""

from typing import Any

from agex import hookimpl


def make_disk(path: str | None = None, create: bool = True, timeout: float = 30.0) -> Any:
    """``create`` and ``timeout`` as :class:`DiskStorage` takes them."""
    from agex_state_disk.storage import DiskStorage

    return DiskStorage(path or "", create=create, timeout=timeout)


@hookimpl
def agex_register_storages(registry: Any) -> None:
    registry.register("disk", make_disk)
