"""The state configuration an agent carries: which kind of memory, kept where."""

from agex.protocols import StateConfig as StateConfig

#: ephemeral: fresh per task; live: objects kept in this process; versioned: every step a commit.
STATE_TYPES = ("versioned", "live", "ephemeral")
