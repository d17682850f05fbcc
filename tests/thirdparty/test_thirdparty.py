"""A third party's plugin, installed from its own folder, found through real metadata."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agex import connect_state, plugins
from agex.errors import DuplicateProviderError, PluginWarning
from agex.testing import StorageContract


class TestShelfStorage(StorageContract):
    provider = "shelf"
    persistent = True  # a second storage with the same options sees the data

    def options(self, tmp_path: Path) -> dict:
        return {"path": str(tmp_path / "shelf.json")}


def test_resolves_from_its_distribution() -> None:
    provider = plugins.resolve("storage", "shelf")
    assert (provider.distribution, provider.version) == ("agex-example-shelf", "0.1.0")
    assert provider.plugin == "agex-example-shelf:shelf"
    assert connect_state(storage="shelf").storage == "shelf"


def test_loaded_only_when_asked(monkeypatch) -> None:
    code = (
        "import sys, agex; from agex import plugins; before = 'agex_example_shelf.plugin' in "
        "sys.modules; plugins.resolve('storage', 'shelf'); print(before, "
        "'agex_example_shelf.plugin' in sys.modules, 'agex_example_shelf.storage' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    ).stdout
    # The plugin module loads on the first question; the storage only when built.
    assert out.split() == ["False", "True", "False"]


def test_duplicate_names_both_distributions(monkeypatch) -> None:
    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", "agex-example-broken")
    with pytest.raises(DuplicateProviderError) as info:
        plugins.resolve("storage", "shelf")
    assert info.value.sources == ("agex-example-clash 0.1.0", "agex-example-shelf 0.1.0")
    assert "AGEX_DISABLE_PLUGINS" in str(info.value)


def test_disabling_one_side_resolves_the_clash(monkeypatch) -> None:
    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", "agex-example-broken,agex_example_shelf")
    assert plugins.resolve("storage", "shelf").distribution == "agex-example-clash"
    monkeypatch.setenv("AGEX_LOAD_PLUGINS", "agex-example-shelf")
    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", "")
    assert plugins.resolve("storage", "shelf").distribution == "agex-example-shelf"


def test_broken_plugin_is_reported_and_the_others_load(monkeypatch) -> None:
    monkeypatch.delenv("AGEX_DISABLE_PLUGINS")
    with pytest.warns(PluginWarning, match="agex-example-broken could not be loaded"):
        states = {s.distribution: s for s in plugins.states()}
    broken = states["agex-example-broken"]
    assert broken.status == "failed"
    assert "No module named 'agex_example_missing_dependency'" in broken.detail
    assert states["agex-example-shelf"].status == "loaded"
    assert plugins.resolve("storage", "memory").distribution == "agex-core"


def test_unknown_provider_mentions_plugins_not_loaded() -> None:
    with pytest.raises(ValueError, match=r"agex-example-broken \(disabled: named in AGEX_DISABLE"):
        plugins.resolve("storage", "shelve")


def test_agex_plugins_shows_all_three() -> None:
    env = {**os.environ, "AGEX_DISABLE_PLUGINS": "", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-m", "agex", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    rows = {(r["distribution"], r["kind"], r["name"]): r for r in json.loads(out)}
    assert rows["agex-example-shelf", "storage", "shelf"]["status"] == "duplicate"
    assert rows["agex-example-clash", "storage", "shelf"]["status"] == "duplicate"
    broken = rows["agex-example-broken", "-", "-"]
    assert broken["status"] == "failed"
    assert "ModuleNotFoundError" in broken["error"]
