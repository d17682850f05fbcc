"""The entry point agex loads for agex-host-ray (group `agex`): the `ray` host. Only `agex`
is imported here; Ray loads when a host is actually used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex import hookimpl

if TYPE_CHECKING:
    from agex.registry import Registry


def make_ray(
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | None = None,
    resources: dict[str, float] | None = None,
    runtime_env: dict[str, Any] | None = None,
    timeout: float = 300.0,
    concurrency: int = 64,
    scaledown_window: float = 300.0,
) -> Any:
    """The ray host; its options spelled out, so that a mistyped one is named before
    anything loads."""
    from agex_host_ray.host import RayHost

    return RayHost(
        address,
        num_cpus,
        num_gpus,
        memory,
        resources,
        runtime_env,
        timeout,
        concurrency,
        scaledown_window,
    )


@hookimpl
def agex_register_hosts(registry: Registry) -> None:
    registry.register("ray", make_ray)
