"""The one door to the Modal SDK.

Every part of agex-host-modal reaches ``modal`` through :func:`modal`, so a test can put an
in-process stand-in in its place with :func:`use` (``agex_host_modal.testing.FakeModal`` is
one), and Modal's errors come back through :func:`failure` as the types agex documents.
Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agex.errors import RemoteExecutionError, TaskTimeout

_override: Any = None

INSTALL = 'pip install "agex-core[modal]"'


def modal() -> Any:
    """The Modal SDK in use: the real ``modal`` package, or what :func:`use` put there."""
    if _override is not None:
        return _override
    try:
        import modal
    except ImportError:
        raise ImportError(
            "the modal host needs the Modal SDK, which is not installed. Install it with: "
            + INSTALL
        ) from None
    return modal


@contextlib.contextmanager
def use(sdk: Any) -> Iterator[Any]:
    """Within the block, the provider uses ``sdk`` instead of the ``modal`` package.

    The test hook: ``with use(FakeModal()) as fake: ...`` runs agents "on Modal" in this
    process.
    """
    global _override
    previous, _override = _override, sdk
    try:
        yield sdk
    finally:
        _override = previous


def in_container() -> bool:
    """True inside a Modal container, where credentials come with the container."""
    return os.environ.get("MODAL_IS_REMOTE") == "1" or not modal().is_local()


def check_credentials() -> None:
    """Fail at once, before any network call, when this machine has no Modal credentials."""
    if in_container():
        return
    config = modal().config.config
    if config.get("token_id") and config.get("token_secret"):
        return
    if config.get("oauth_refresh_token") and config.get("oauth_client_id"):
        return
    raise PermissionError(
        "no Modal credentials found: run `modal token new` (or `modal setup`) once on this "
        "machine, or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
    )


def mounted(path: str) -> Path:
    """Where a Volume mounted at ``path`` is seen by this code (the fake maps it)."""
    where = getattr(modal(), "mounted", None)
    return Path(path) if where is None else Path(where(path))


#: Where Modal reports outages; a message about a failure on Modal's side points there.
STATUS = "https://status.modal.com"


def failure(exc: BaseException, doing: str) -> Exception:
    """What ``exc``, met while ``doing`` (e.g. "deploying app 'x'"), means to the caller,
    as the type agex documents, saying what to do: refused credentials are a
    PermissionError, Modal's function timeout a TaskTimeout, anything else a
    RemoteExecutionError (with the container's traceback when the error came from there)."""
    import traceback

    exception = modal().exception
    said = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, exception.AuthError | exception.PermissionDeniedError):
        return PermissionError(
            f"Modal refused this machine's credentials while {doing} ({said}): run "
            "`modal token new` (or `modal setup`), or set MODAL_TOKEN_ID and "
            "MODAL_TOKEN_SECRET to a token of the workspace the app belongs to"
        )
    if isinstance(exc, exception.FunctionTimeoutError):
        return TaskTimeout(
            f"Modal stopped the task's container at its function timeout while {doing} "
            f"({said}): give the task more time with connect_host(..., timeout=...)"
        )
    if isinstance(exc, exception.ConnectionError | exception.ServiceError | OSError):
        advice = f"check this machine's network connection and {STATUS}, then run it again"
    elif isinstance(exc, exception.ImageBuildError):
        advice = (
            "read the image's build log in the Modal dashboard, under the app's name: a "
            "package pinned from this machine may not install on Modal's Linux image, so "
            "register code from packages that do, or install a version here that does"
        )
    elif isinstance(exc, exception.NotFoundError):
        advice = (
            "create what Modal did not find (a secret with `modal secret create NAME "
            "KEY=value`), or correct its name in connect_host(secrets=...)"
        )
    elif isinstance(exc, exception.ResourceExhaustedError):
        advice = "wait for the workspace's quota or rate limit to allow it, or raise it in Modal"
    elif isinstance(exc, exception.VersionError):
        advice = "upgrade the Modal client: pip install --upgrade modal"
    elif isinstance(exc, exception.InvalidError):
        advice = (
            'change what Modal refused: an option of connect_host(provider="modal", '
            "...), or the Python version this process runs, which the image runs too"
        )
    elif isinstance(exc, exception.Error):
        advice = f"run the task again: this failed on Modal's side (see {STATUS} if it lasts)"
    else:  # raised in the container, outside the task's own outcome
        return RemoteExecutionError(
            f"the Modal container failed while {doing}: {said}. Run the task again; if it "
            "fails the same way, the traceback says where",
            remote_traceback="".join(traceback.format_exception(exc)),
            remote_type=type(exc).__name__,
        )
    return RemoteExecutionError(f"Modal failed while {doing}: {said}. To go on, {advice}")


def supported_pythons() -> tuple[str | None, list[str]] | None:
    """The Python series Modal's image builder supports, as the installed SDK defines them
    (``modal._image.SUPPORTED_PYTHON_SERIES``), with the builder version they are for: the
    one this machine's Modal configuration names, or None (then the workspace's, known only
    to Modal, and every series some released builder supports). None when the SDK does not
    say."""
    try:
        from modal._image import SUPPORTED_PYTHON_SERIES as series
    except ImportError:
        return None
    builder = modal().config.config.get("image_builder_version")
    if builder in series:
        return builder, list(series[builder])
    released = [one for version, one in series.items() if version != "PREVIEW"]
    return None, sorted({s for one in released for s in one}, key=_series_order)


def _series_order(series: str) -> tuple[int, ...]:
    """3.9 before 3.10, and 3.14 before its free-threaded 3.14t."""
    return (*(int(part) for part in series.rstrip("t").split(".")), series.endswith("t"))
