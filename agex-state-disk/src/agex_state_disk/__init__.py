"""agex-state-disk: the `disk` storage for agex."""

__version__ = "0.1.0"
