"""What an agent remembers between steps and tasks."""

from agex.state.config import STATE_TYPES, StateConfig

__all__ = ["STATE_TYPES", "StateConfig"]
