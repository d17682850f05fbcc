"""docs/hosts.md says what the modal host does: the GPU types it knows, the heartbeat's
times, and the command that runs the live test."""

from __future__ import annotations

import re
from pathlib import Path

from agex_host_modal import remote
from agex_host_modal.host import GPU_TYPES

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "hosts.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"\n#### {title}\n")
    return DOC[start : DOC.index("\n#", start + 1)]


def test_the_gpu_types_are_the_ones_the_host_knows():
    listed = re.findall(r"`([A-Z0-9!+-]+)`", section("Resources").split("in any case")[0])
    assert set(listed) == set(GPU_TYPES)


def test_the_heartbeat_times_are_the_hosts():
    text = " ".join(section("Cancelling").split())
    assert f"every {remote.HEARTBEAT:g} seconds" in text
    assert f"for {remote.STALE:g} seconds stops the run" in text


def test_the_live_test_command_names_the_live_tests():
    (command,) = re.findall(r"```bash\n(.*?)\n```", section("Checking against the real Modal"))
    assert command == "AGEX_MODAL_LIVE=1 pytest tests/modal/test_live.py -m modal_live"
    assert (ROOT / "tests" / "modal" / "test_live.py").read_text().count("modal_live") >= 1
