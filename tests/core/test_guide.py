"""The user guide's examples run: every ```python block of a page in docs/guide/, in order,
in one module of its own (a page builds on its earlier blocks), in a folder of its own.

A block that cannot run here (it needs a real model's key, a server elsewhere) starts with
the line ``# not run: <why>``; the guide says so to its readers too.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

GUIDE = Path(__file__).parents[2] / "docs" / "guide"
PAGES = sorted(GUIDE.glob("*.md"))
SKIP = "# not run:"


def blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def test_the_guide_has_pages() -> None:
    assert (GUIDE / "index.md").is_file()
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", (GUIDE / "index.md").read_text()))
    assert {p.name for p in PAGES} - {"index.md"} == linked, "index.md links every page"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_examples_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("AGEX_LLM_PROVIDER", "AGEX_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    name = f"agex_guide_{page.stem.replace('-', '_')}"
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")
    monkeypatch.setitem(sys.modules, name, module)
    for number, code in enumerate(blocks(page), 1):
        if code.startswith(SKIP):
            continue
        try:
            # dont_inherit: not under this file's own __future__ imports, as a reader runs them
            code_object = compile(code, f"{page.name}, block {number}", "exec", dont_inherit=True)
            exec(code_object, module.__dict__)
        except Exception as exc:
            raise AssertionError(f"{page.name}, block {number} fails:\n{code}") from exc
