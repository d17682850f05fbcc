"""The version of agex-core (every agex distribution moves in lockstep with it)."""

__version__ = "0.1.0"
