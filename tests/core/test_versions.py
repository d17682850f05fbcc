"""The distributions move in lockstep, and core's extras pin that one version."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import agex

ROOT = Path(__file__).parents[2]
DISTRIBUTIONS = [
    "agex-core",
    "agex-host-http",
    "agex-host-modal",
    "agex-host-ray",
    "agex-state-disk",
    "agex-state-postgres",
]


def project(dist: str) -> dict:
    return tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]


def test_one_version_everywhere() -> None:
    versions = {d: project(d)["version"] for d in DISTRIBUTIONS}
    assert set(versions.values()) == {agex.__version__}, versions


def test_installed_core_matches_source() -> None:
    assert metadata.version("agex-core") == agex.__version__


def test_extras_pin_the_siblings_to_the_same_version() -> None:
    extras = project("agex-core")["optional-dependencies"]
    for extra, dist in [
        ("http", "agex-host-http"),
        ("modal", "agex-host-modal"),
        ("ray", "agex-host-ray"),
        ("disk", "agex-state-disk"),
        ("postgres", "agex-state-postgres"),
    ]:
        assert extras[extra] == [f"{dist}=={agex.__version__}"]
    assert extras["server"] == [f"agex-host-http[server]=={agex.__version__}"]
    assert extras["all"] == [
        "agex-core[http,server,modal,ray,disk,postgres,openai,anthropic,gemini]"
    ]


def test_plugins_pin_core_and_declare_their_entry_point() -> None:
    for dist in DISTRIBUTIONS[1:]:
        meta = project(dist)
        assert meta["dependencies"][0] == f"agex-core=={agex.__version__}"
        (target,) = meta["entry-points"]["agex"].values()
        assert re.fullmatch(rf"{dist.replace('-', '_')}\.plugin", target)
