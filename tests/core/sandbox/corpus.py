"""Host objects for the reachability test: what a developer registers, and what registered
functions hand back. Each holds something agent code must never get, behind a door the
sandbox is meant to keep shut."""

import dataclasses
import os
import sys


class Vault:
    """Registered with ``constructable=False``: agent code gets a stand-in, never this."""

    __match_args__ = ("label",)

    def __init__(self, label: str = "main") -> None:
        self.label = label
        self._key = "s3cr3t"

    def balance(self) -> int:
        return 100

    @classmethod
    def kinds(cls) -> list[str]:
        return ["main", "savings"]


class SavingsVault(Vault):
    """Not registered: what a registered function returns, a subclass of the sealed class."""


@dataclasses.dataclass
class Record:
    """Registered with ``backend`` excluded; that field holds a real module."""

    name: str
    backend: object = None

    def describe(self) -> str:
        return f"record {self.name}"


class Holder:
    """A host object whose public attributes hold forbidden things directly and inside
    containers: attribute reads are screened, container contents are not."""

    def __init__(self) -> None:
        self.module = os
        self.builtin = eval
        self.sealed = Vault
        self.modules = [os, sys]
        self.builtins = (eval, open, __import__)
        self.classes = {"vault": Vault, "savings": SavingsVault}
        self.nested = {"deep": [(os.path, getattr)]}
        self.name = "holder"

    def explode(self) -> None:
        raise LookupError("the holder blew up", self.name)


def make_holder() -> Holder:
    return Holder()


def make_record() -> Record:
    return Record("r1", backend=os)


def open_vault() -> Vault:
    return SavingsVault("savings")
