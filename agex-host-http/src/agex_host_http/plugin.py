"""The entry point agex loads for agex-host-http (group `agex`): the `http` host and the
`agex serve` command. Only `agex` is imported here; httpcore, FastAPI and uvicorn load inside
the factories, when a host or the server is actually made.

The client is agex-host-http's required dependencies; the server stack is its `server`
extra. So `serve` is registered wherever the distribution is, and its factory says what to
install when the stack is absent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agex import hookimpl
from agex.errors import ProviderNotInstalledError

if TYPE_CHECKING:
    from agex.registry import Registry

#: The modules `agex serve` needs beyond the client: agex-host-http's `server` extra.
SERVER_MODULES = ("fastapi", "uvicorn")


class ServerNotInstalledError(ProviderNotInstalledError):
    """`agex serve` was asked for where agex-host-http is installed without its server extra.

    The message begins with the command to run: `agex --help` shows only its first sentence.
    """

    def __init__(self, missing: Sequence[str]) -> None:
        from agex.catalog import SUPPLIERS

        supplier = SUPPLIERS["command", "serve"]
        super().__init__("command", "serve", "agex-host-http[server]", supplier.install)
        self.missing = tuple(missing)
        self.name = self.missing[0]  # the module an import would fail on first

    def __str__(self) -> str:
        return (
            f"install it with: {self.install}. This environment has the agex http client "
            f"but not the server ({', '.join(self.missing)} not installed)."
        )


def make_http(
    url: str,
    token: str | None = None,
    timeout: float = 300.0,
    serializer: str = "cloudpickle",
) -> Any:
    """The http host; its options spelled out, so that a missing or mistyped one is named
    before anything loads."""
    from agex_host_http.client import HttpHost

    return HttpHost(url=url, token=token, timeout=timeout, serializer=serializer)


def serve_command() -> Any:
    # Looked for, not imported: listing commands (`agex --help`) builds this command, and
    # that should not cost loading FastAPI.
    from importlib.util import find_spec

    missing = [name for name in SERVER_MODULES if find_spec(name) is None]
    if missing:
        raise ServerNotInstalledError(missing)
    from agex_host_http.serve import serve

    return serve


@hookimpl
def agex_register_hosts(registry: Registry) -> None:
    registry.register("http", make_http)


@hookimpl
def agex_register_commands(commands: Registry) -> None:
    commands.register("serve", serve_command)
