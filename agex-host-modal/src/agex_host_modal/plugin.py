"""The entry point agex loads for agex-host-modal (group `agex`): the `modal` host and the
storages `modal-dict` and `modal-volume`. Only `agex` is imported here; the Modal SDK loads
when a host or storage is actually used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex import hookimpl

if TYPE_CHECKING:
    from agex.registry import Registry


def make_modal(
    secrets: str | list[str] | None = None,
    app: str | None = None,
    gpu: str | list[str] | None = None,
    memory: int | tuple[int, int] | list[int] | None = None,
    timeout: float = 300.0,
    scaledown_window: int = 300,
    preemptible: bool | None = None,
) -> Any:
    """The modal host; its options spelled out, so that a mistyped one is named before
    anything loads. ``secrets`` is required: the host says how to create one."""
    from agex_host_modal.host import ModalHost

    return ModalHost(secrets, app, gpu, memory, timeout, scaledown_window, preemptible)


def make_dict(path: str | None = None) -> Any:
    from agex_host_modal.storage.dicts import ModalDictStorage

    return ModalDictStorage(path)


def make_volume(path: str | None = None) -> Any:
    from agex_host_modal.storage.volumes import ModalVolumeStorage

    return ModalVolumeStorage(path)


@hookimpl
def agex_register_hosts(registry: Registry) -> None:
    registry.register("modal", make_modal)


@hookimpl
def agex_register_storages(registry: Registry) -> None:
    registry.register("modal-dict", make_dict)
    registry.register("modal-volume", make_volume)
