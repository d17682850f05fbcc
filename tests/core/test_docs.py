"""docs/plugins.md documents every hook with its real signature, and its examples run; the
install commands in every doc name extras that exist."""

import inspect
import re
import tomllib
import types
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from agex import hookspecs, plugins
from agex.cli import cli
from agex.cli.list_plugins import rows
from agex.errors import PluginWarning

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = ROOT / "tests" / "thirdparty" / "agex-example-shelf"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)


def test_every_hook_has_a_section_with_its_signature() -> None:
    documented = dict(re.findall(r"^### (agex_\w+)\((.*)\)$", DOC, flags=re.M))
    specs = {
        name: ", ".join(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if name.startswith("agex_") and callable(fn)
    }
    assert documented == specs


def test_file_examples_are_the_real_files() -> None:
    shown = {}
    for block in code_blocks("python") + code_blocks("toml"):
        first, _, rest = block.partition("\n")
        if first.startswith("# src/"):
            shown[first[2:]] = rest
    assert shown, "the walkthrough shows the plugin module"
    for path, text in shown.items():
        assert (EXAMPLE / path).read_text() == text


def test_contract_example_is_the_one_we_run() -> None:
    (block,) = [b for b in code_blocks("python") if b.startswith("# tests/test_shelf.py")]
    test_class = block[block.index("class TestShelfStorage") :]
    assert test_class in (ROOT / "tests" / "thirdparty" / "test_thirdparty.py").read_text()


def test_entry_point_example_matches_the_example_distribution() -> None:
    (block,) = [b for b in code_blocks("toml") if "[project.entry-points.agex]" in b]
    assert '[project.entry-points.agex]\nshelf = "agex_example_shelf.plugin"' in block
    assert 'shelf = "agex_example_shelf.plugin"' in (EXAMPLE / "pyproject.toml").read_text()


def test_command_example_runs() -> None:
    (block,) = [b for b in code_blocks("python") if "agex_register_commands" in b]
    namespace: dict = {"hookimpl": hookspecs.hookimpl}
    exec(block, namespace)
    plugin = types.SimpleNamespace(agex_register_commands=namespace["agex_register_commands"])
    name = plugins.register(plugin, name="docs-hello")
    try:
        result = CliRunner().invoke(cli, ["hello"])
    finally:
        plugins.unregister(name)
    assert result.output == "hello\n"


def test_fixture_example_passes(pytester) -> None:
    (block,) = [b for b in code_blocks("python") if "def test_uses_fake_storage" in b]
    pytester.makepyfile(test_from_docs=block)
    pytester.inline_run("-p", "no:cacheprovider").assertoutcome(passed=1)


def core_providers() -> list[tuple[str, str]]:
    """What agex-core registers, as `agex plugins` lists it: (kind, name), in its order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # about other plugins: not checked here
        listed = rows()
    return [(r["kind"], r["name"]) for r in listed if r["distribution"] == "agex-core"]


def test_core_s_own_providers_are_the_ones_listed() -> None:
    intro = DOC[: DOC.index("\n## ")]
    sentence = intro[intro.index("core registers its built-ins") :]
    sentence = sentence[: sentence.index("Nothing below")]
    named = set(re.findall(r"`([a-z][\w.-]*)`", sentence))
    assert named == {name for _, name in core_providers()}


def test_sample_agex_plugins_output_starts_with_the_real_core_rows() -> None:
    (block,) = re.findall(r"```\n(\$ agex plugins\n.*?)```", DOC, flags=re.S)
    header, *shown = block.splitlines()[1:]
    real = CliRunner().invoke(cli, ["plugins"]).output.splitlines()[0]
    assert header.split() == real.split()
    core = [row.split()[:2] for row in shown if row.split()[2:3] == ["agex-core"]]
    assert [tuple(r) for r in core] == core_providers()
    assert all(row.split()[4] == "ok" for row in shown if row.split()[2:3] == ["agex-core"])


def extras() -> set[str]:
    project = tomllib.loads((ROOT / "agex-core" / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_install_commands_name_real_extras(page: Path) -> None:
    for named in re.findall(r"agex-core\[([\w,-]+)\]", page.read_text()):
        assert set(named.split(",")) <= extras(), f"{page.name}: agex-core[{named}]"


def test_the_http_pages_say_which_extra_goes_where() -> None:
    readme = (ROOT / "README.md").read_text()
    hosts = (ROOT / "docs" / "hosts.md").read_text()
    for page in (readme, hosts):
        assert 'pip install "agex-core[http]"' in page
        assert 'pip install "agex-core[server]"' in page
