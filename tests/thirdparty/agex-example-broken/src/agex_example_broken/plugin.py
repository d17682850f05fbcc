"""Fails at import, the way a plugin with a missing dependency does."""

import agex_example_missing_dependency  # noqa: F401 - deliberately not installed
