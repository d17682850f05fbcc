"""The entry point agex loads for agex-host-http (group `agex`): the `http` host and the
`agex serve` command. Only `agex` is imported here; httpx, FastAPI and uvicorn load inside
the factories, when a host or the server is actually made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex import hookimpl

if TYPE_CHECKING:
    from agex.registry import Registry


def make_http(**options: Any) -> Any:
    from agex_host_http.client import HttpHost

    return HttpHost(**options)


def serve_command() -> Any:
    from agex_host_http.serve import serve

    return serve


@hookimpl
def agex_register_hosts(registry: Registry) -> None:
    registry.register("http", make_http)


@hookimpl
def agex_register_commands(commands: Registry) -> None:
    commands.register("serve", serve_command)
