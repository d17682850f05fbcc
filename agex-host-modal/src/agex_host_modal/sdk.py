"""The one door to the Modal SDK.

Every part of agex-host-modal reaches ``modal`` through :func:`modal`, so a test can put an
in-process stand-in in its place with :func:`use` (``agex_host_modal.testing.FakeModal`` is
one). Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
