"""agex-state-postgres: the `postgres` storage for agex (state many servers share)."""

__version__ = "0.1.0"
