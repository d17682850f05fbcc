"""The seed's Modal examples, as written, against the fake Modal (the examples' model comes
from AGEX_LLM_PROVIDER, set here to a scripted one)."""

from __future__ import annotations

import pytest

SEED_MODAL = """
from agex import Agent, connect_host, connect_state
host = connect_host(
provider="modal",
secrets="llm-keys", # Required: Modal secret names
gpu="A10G", # Optional: GPU type
memory=4096, # Optional: Memory in MB
timeout=600.0, # Optional: Execution timeout
scaledown_window=300, # Optional: Idle seconds before scale-down
)
# Memory storage: Dict with 7-day TTL (auto-named from agent fingerprint)
state = connect_state(type="versioned", storage="memory")
# OR Disk storage: Dict + Volume (forever, requires path for Volume naming)
state = connect_state(type="versioned", storage="disk", path="my-agent")
agent = Agent(
primer="You are helpful.",
host=host,
state=state,
)
"""

SEED_STATES = """
from agex import connect_state
# ✅ Memory: Uses Disk + Modal Dict (7-day TTL on inactive keys)
# Auto-named from agent fingerprint if no path provided
state = connect_state(type="versioned", storage="memory")
# ✅ Disk: Uses Disk + Modal Dict + Volume (forever)
# Requires path to name the Volume
state = connect_state(type="versioned", storage="disk", path="my-agent")
# ✅ Ephemeral: Fresh state per invocation
state = connect_state(type="ephemeral")
"""

SEED_LIVE = """
from agex import connect_state
state = connect_state(type="live", storage="disk") # Raises ValueError
"""

#: What docs/hosts.md adds where the seed leaves "Execution:" and "Optional warmup" blank.
EXECUTION = '''
@agent.task
def summarize(text: str) -> str:
    """Summarize the text in one sentence."""


result = summarize("Modal runs the whole loop remotely.")
'''
WARMUP = """
agent.warmup()
"""


@pytest.fixture
def scripted_env(monkeypatch):
    monkeypatch.setenv("AGEX_LLM_PROVIDER", "scripted")


def run(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, "<seed>", "exec"), namespace)
    return namespace


def test_seed_modal_example_then_execution_and_warmup(fake, scripted_env):
    from agex import connect_llm

    namespace = run(SEED_MODAL)
    agent = namespace["agent"]
    assert agent.host.dump_config()["gpu"] == "A10G"
    agent.llm = connect_llm("scripted", responses=["```python\ntask_success('short')\n```"])
    run(WARMUP, namespace)
    assert len(fake.deploys) == 1
    run(EXECUTION, namespace)
    assert namespace["result"] == "short"
    assert "my-agent" in fake.volumes  # the disk tier's Volume, named from the path
    assert len(fake.deploys) == 1


def test_seed_state_requirements(fake):
    from agex import Agent, connect_host

    namespace = run(SEED_STATES)
    Agent(host=connect_host(provider="modal", secrets="llm-keys"), state=namespace["state"])
    with pytest.raises(ValueError, match="needs a path"):
        run(SEED_LIVE)


def test_docs_show_the_execution_and_warmup_used_here():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "hosts.md").read_text()
    assert EXECUTION.strip() in doc
    assert WARMUP.strip() in doc
