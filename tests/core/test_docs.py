"""docs/plugins.md documents every hook with its real signature, and its examples run."""

import inspect
import re
import types
from pathlib import Path

from click.testing import CliRunner

from agex import hookspecs, plugins
from agex.cli import cli

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text()
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
