"""agex-host-http: the `http` host and the `agex serve` command for agex."""

__version__ = "0.1.0"
