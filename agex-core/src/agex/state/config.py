"""The state configuration an agent carries: which kind of memory, kept where."""

from __future__ import annotations

from dataclasses import dataclass

#: ephemeral: fresh per task; live: objects kept in this process; versioned: every step a commit.
STATE_TYPES = ("versioned", "live", "ephemeral")


@dataclass(frozen=True)
class StateConfig:
    """Made by ``connect_state``; hosts read it to build the storage where the loop runs."""

    type: str
    storage: str | None
    path: str | None
