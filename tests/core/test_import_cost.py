"""`import agex` must stay cheap: no plugin manager, no entry-point scan, no plugin, no SDK."""

import json
import subprocess
import sys

import pytest

HEAVY = [
    "pluggy",
    "importlib.metadata",
    "click",
    "cloudpickle",
    "attrs",
    "agex.sandbox",
    "agex.agent",
    "agex.plugins",
    "agex_host_http",
    "agex_host_modal",
    "agex_host_ray",
    "agex_state_disk",
    "openai",
    "anthropic",
    "google.genai",
    "modal",
    "ray",
    "fastapi",
]


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def test_import_agex_loads_nothing_heavy() -> None:
    loaded = modules_after("import agex")
    assert "agex" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_public_names_load_on_first_use_without_scanning() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agex import connect_state; import agex.plugins as p; print(p._manager is None)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "True"


def test_resolving_uses_pluggy_but_not_importlib_metadata() -> None:
    loaded = modules_after("import agex.plugins; agex.plugins.providers('storage')")
    assert "pluggy" in loaded
    assert "importlib.metadata" not in loaded  # its import alone costs more than a lookup


def test_unknown_attribute_is_an_attribute_error() -> None:
    import agex

    with pytest.raises(AttributeError, match="no_such_name"):
        agex.no_such_name  # noqa: B018


def test_dir_lists_the_lazy_names() -> None:
    import agex

    assert {"connect_host", "connect_state", "connect_llm", "hookimpl"} <= set(dir(agex))
    for name in agex.__all__:
        assert getattr(agex, name) is not None
