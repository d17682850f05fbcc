"""agex-host-modal: the `modal` host and the Modal Dict and Volume storages for agex."""

__version__ = "0.1.0"
