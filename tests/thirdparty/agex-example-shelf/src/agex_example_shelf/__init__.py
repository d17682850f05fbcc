"""A third-party agex storage, written the way docs/plugins.md describes."""
