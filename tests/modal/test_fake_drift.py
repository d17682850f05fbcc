"""The fake Modal keeps to the installed SDK: every member it fakes exists in ``modal`` with
the parameters the fake declares (same name, kind and default), and the fake leaves out no
parameter the real one requires. A Modal release that renames or drops something the
provider passes fails here."""

from __future__ import annotations

import inspect

import modal
import pytest

from agex_host_modal.testing import FAKED, FakeModal

CASES = [(cls, member) for cls, members in FAKED.items() for member in members]


def _parameters(func):
    signature = inspect.signature(func)
    return {
        p.name: (p.kind, repr(p.default))
        for p in signature.parameters.values()
        if p.name not in ("self", "cls")
    }


@pytest.mark.parametrize(("cls", "member"), CASES, ids=[f"{c}.{m}" for c, m in CASES])
def test_faked_member_matches_modal(cls: str, member: str) -> None:
    fake = FakeModal()
    try:
        real = _parameters(getattr(getattr(modal, cls), member))
        faked = _parameters(getattr(getattr(fake, cls), member))
    finally:
        fake.close()
    for name, (kind, default) in faked.items():
        assert name in real, f"modal.{cls}.{member} has no parameter {name!r}"
        assert real[name][0] == kind, f"modal.{cls}.{member}({name}) is {real[name][0]}"
        if kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            assert real[name][1] == default, f"modal.{cls}.{member}({name}) default differs"
    required = {
        name
        for name, (kind, default) in real.items()
        if default == repr(inspect.Parameter.empty)
        and kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    assert required <= faked.keys(), f"the fake lacks required {required - faked.keys()}"


def test_every_module_level_name_the_fake_offers_exists_in_modal() -> None:
    fake = FakeModal()
    try:
        for name in ("App", "Image", "Secret", "Function", "Dict", "Volume", "is_local"):
            assert hasattr(modal, name)
            assert hasattr(fake, name)
        assert _parameters(modal.is_local) == _parameters(fake.is_local) == {}
        config = inspect.signature(modal.config.config.get)
        assert _parameters(fake.config.config.get) == {
            n: (p.kind, repr(p.default)) for n, p in config.parameters.items()
        }
        assert fake.exception is modal.exception
        assert fake.volume.FileEntryType is modal.volume.FileEntryType
    finally:
        fake.close()
