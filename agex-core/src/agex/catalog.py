"""Providers that our own distributions supply, and the command that installs each.

When one of these is asked for and its distribution is absent, the error says exactly
what to install instead of only "unknown provider".
"""

from __future__ import annotations

from typing import NamedTuple


class Supplier(NamedTuple):
    distribution: str
    extra: str

    @property
    def install(self) -> str:
        return f'pip install "agex-core[{self.extra}]"'


HTTP = Supplier("agex-host-http", "http")
#: `agex serve` needs agex-host-http with its server extra (FastAPI, uvicorn); the http
#: extra alone is the client.
SERVER = Supplier("agex-host-http", "server")
MODAL = Supplier("agex-host-modal", "modal")
RAY = Supplier("agex-host-ray", "ray")
DISK = Supplier("agex-state-disk", "disk")
POSTGRES = Supplier("agex-state-postgres", "postgres")

#: (kind, provider name) -> the distribution that supplies it.
SUPPLIERS: dict[tuple[str, str], Supplier] = {
    ("host", "http"): HTTP,
    ("command", "serve"): SERVER,
    ("host", "modal"): MODAL,
    ("host", "ray"): RAY,
    ("storage", "modal-dict"): MODAL,
    ("storage", "modal-volume"): MODAL,
    ("storage", "disk"): DISK,
    ("storage", "postgres"): POSTGRES,
}
