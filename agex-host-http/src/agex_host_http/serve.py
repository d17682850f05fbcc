"""`agex serve`: run the agex server (FastAPI on uvicorn)."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agex_host_http.client import TOKEN_ENV

#: Where the server reads its database's URL when --state-url is not given.
STATE_URL_ENV = "AGEX_STATE_URL"

if TYPE_CHECKING:
    from agex.isolation.settings import Endpoint


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it could resolve to anything


def read_token(token_file: str | None) -> str | None:
    """The token from --token-file, else from AGEX_SERVER_TOKEN, else None."""
    if token_file is not None:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise click.UsageError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--state-dir",
    default="agex-state",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where state lives; every client state path resolves inside it.",
)
@click.option(
    "--state-url",
    envvar=STATE_URL_ENV,
    metavar="postgresql://...",
    help="Keep clients' state in this PostgreSQL database instead of --state-dir, shared "
    "with the server's other replicas (default: $AGEX_STATE_URL; set that rather than "
    "this option, so the password stays out of the process list).",
)
@click.option(
    "--state-pool-size",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="With --state-url: the most connections to the database kept open for clients' "
    "state (one pool, shared by every state).",
)
@click.option(
    "--state-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="With --state-url: seconds a state operation may wait for the database.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help=f"File holding the token clients must send (default: ${TOKEN_ENV}).",
)
@click.option(
    "--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate."
)
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS key.")
@click.option(
    "--max-body",
    default=32 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest request body, in bytes (larger ones get 413).",
)
@click.option(
    "--detach-grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a run may go unfollowed by any client before it is cancelled.",
)
@click.option(
    "--head-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a client has to send a request's line and headers.",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a client has to send a request's body, once its headers are in.",
)
@click.option(
    "--isolation",
    type=click.Choice(["none", "process", "kernel"]),
    default=None,
    help="The weakest isolation agent code runs at here; agents asking for less are "
    "refused. Default: the strongest this machine has (kernel on Linux).",
)
@click.option(
    "--max-memory-mb",
    default=2048,
    show_default=True,
    type=click.IntRange(64),
    help="Memory limit of each worker process (and the most an agent may ask for).",
)
@click.option(
    "--max-cpu-seconds",
    default=3600,
    show_default=True,
    type=click.IntRange(1),
    help="CPU time each worker process may use (a run's worker is killed past it).",
)
@click.option(
    "--remote",
    multiple=True,
    help="Another agex server (URL) that sub-agents of this server's runs may be sent to, "
    "with the token in $AGEX_SERVER_TOKEN (repeatable). Sub-agents on other hosts are "
    "refused.",
)
@click.option(
    "--model-endpoint",
    "model_endpoints",
    multiple=True,
    metavar="URL[=KEY_VAR]",
    help="An endpoint (base_url) besides the providers' own that clients' models may be "
    "called at, and the variable whose key is sent there; none sends no key, for a local "
    "server that needs none (repeatable; also $AGEX_MODEL_ENDPOINTS, comma separated). "
    "Other endpoints, and other keys, are refused.",
)
@click.option(
    "--worker-network",
    is_flag=True,
    help="Let workers open network connections (registered functions that call an API).",
)
@click.option(
    "--worker-read",
    multiple=True,
    type=click.Path(exists=True),
    help="A path workers may read besides Python and its packages (repeatable).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str,
    port: int,
    state_dir: Path,
    state_url: str | None,
    state_pool_size: int,
    state_timeout: float,
    token_file: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    max_body: int,
    detach_grace: float,
    head_timeout: float,
    body_timeout: float,
    isolation: str | None,
    max_memory_mb: int,
    max_cpu_seconds: int,
    remote: tuple[str, ...],
    model_endpoints: tuple[str, ...],
    worker_network: bool,
    worker_read: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the agex server: clients' tasks run here, events stream back.

    An authenticated client runs code on this machine: give it a token, and run it where
    that is acceptable (a container).
    """
    token = read_token(token_file)
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host} without a token: anyone who reaches it could run "
            f"code here. Pass --token-file FILE or set {TOKEN_ENV}"
        )
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("TLS needs both --ssl-certfile and --ssl-keyfile")
    where = None
    if state_url:
        where = _database(state_url)
    # Read once, then gone from this process's environment: nothing it starts needs it.
    # The secrets are zeroed where the process's first environment stays readable to other
    # processes of this user (/proc/<pid>/environ); the token stays in os.environ, for the
    # sub-agents sent to --remote servers.
    os.environ.pop(STATE_URL_ENV, None)
    from agex.isolation.confine import wipe_initial_environment

    wipe_initial_environment(STATE_URL_ENV, TOKEN_ENV, "AGEX_POSTGRES_URL", "PGPASSWORD")
    import uvicorn

    from agex.isolation.settings import Isolation
    from agex_host_http.server.app import Settings, create_app, isolating
    from agex_host_http.server.protocol import timed_head

    level = _level(isolation)
    endpoints = _endpoints(model_endpoints)
    hidden = (str(Path(token_file).resolve()),) if token_file else ()
    settings = Settings(
        state_dir=state_dir,
        state_url=state_url or None,
        state_pool_size=state_pool_size,
        state_timeout=state_timeout,
        token=token,
        max_body=max_body,
        detach_grace=detach_grace,
        body_timeout=body_timeout,
        isolation=Isolation(
            level=level,
            memory_mb=max_memory_mb,
            cpu_seconds=max_cpu_seconds,
            remotes=remote,
            endpoints=endpoints,
            network=worker_network,
            readable=tuple(str(Path(p).resolve()) for p in worker_read),
            hidden=hidden,
        ),
    )
    app = create_app(settings)
    scheme = "https" if ssl_certfile else "http"
    click.echo(
        f"agex server on {scheme}://{host}:{port}, state in "
        f"{where or settings.state_dir.resolve()}, "
        + ("token required" if token else "no token (loopback only)"),
        err=True,
    )
    _more_files()
    _report_isolation(isolating(settings.isolation, settings.state_dir.resolve()))
    for endpoint in endpoints:
        sent = f"${endpoint.key_env}" if endpoint.key_env else "no key"
        click.echo(f"models may be called at {endpoint.url} (sent: {sent})", err=True)
    # Every run in flight waits through a garbage collection, and with many runs alive a
    # full one took tens of milliseconds, once every round of runs. What is alive now (the
    # modules, the app) lives as long as the server: it is set aside from collections; and
    # collections come less often than Python's default, which suits small scripts.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level=log_level,
        http=timed_head(head_timeout),
        timeout_graceful_shutdown=5,
    )


def _database(url: str) -> str:
    """Check the database clients' state will be kept in (its tables made on first use);
    where it is, as the server says it (never with the password)."""
    from agex import plugins
    from agex.errors import AgexError, ProviderError

    context = click.get_current_context()
    given = context.get_parameter_source("state_url") == click.core.ParameterSource.COMMANDLINE
    if context.get_parameter_source("state_dir") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "give --state-dir or --state-url, not both: with a database, state lives there"
        )
    try:
        plugins.resolve("storage", "postgres")
    except ProviderError as exc:
        raise click.UsageError(
            "--state-url keeps state in PostgreSQL, with the postgres storage, which is not "
            f'available here: pip install "agex-core[postgres]" ({exc})'
        ) from None
    from agex_state_postgres import schema
    from agex_state_postgres.place import Place

    source = "--state-url" if given else f"${STATE_URL_ENV}"
    try:
        place = Place.find(url, source)
        if given and place.parts().get("password"):
            click.echo(
                "WARNING: the password in --state-url can be read in the process list by "
                f"anyone on this machine; set {STATE_URL_ENV} instead",
                err=True,
            )
        schema.prepare(place, timeout=10.0)  # connects, and makes the tables the first time
    except AgexError as exc:
        raise click.ClickException(exc.message) from None
    return str(place)


def _more_files() -> None:
    """Let the server hold as many connections as the system lets this process open: every
    run a client follows is a connection, and the usual default of 1024 files is soon met."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _endpoints(given: tuple[str, ...]) -> tuple[Endpoint, ...]:
    """The model endpoints from --model-endpoint and $AGEX_MODEL_ENDPOINTS."""
    from agex.isolation.settings import ENDPOINTS_ENV, Endpoint

    listed = [spec for spec in os.environ.get(ENDPOINTS_ENV, "").split(",") if spec.strip()]
    try:
        return tuple(Endpoint.parse(spec) for spec in (*given, *listed))
    except ValueError as exc:
        raise click.UsageError(f"--model-endpoint / ${ENDPOINTS_ENV}: {exc}") from None


def _level(asked: str | None) -> str:
    from agex.isolation import check, strongest

    if asked is None:
        return strongest()
    try:
        return check(asked, "--isolation")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _report_isolation(isolation: Any) -> None:
    """Say how agent code is isolated, layer by layer, and start the warm workers."""
    if isolation.level == "none":
        click.echo(
            "WARNING: --isolation none: agent code runs inside this server process, next to "
            "its token, its state and its keys; the sandbox's guards are its only boundary",
            err=True,
        )
        return
    from agex.isolation.pool import pool

    spec = isolation.spec(None, None, "this server")
    layers = pool().prepare(spec)
    click.echo(
        f"isolation {isolation.level}: agent code runs in confined worker processes", err=True
    )
    for layer, state in layers.items():
        click.echo(f"  {layer}: {state}", err=True)
