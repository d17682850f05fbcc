"""A local module (no distribution, not on the cluster's path) whose function the ray host's
tests register: it must travel to the cluster as source, and the distribution it imports
(iniconfig, from a package index) as a pin."""

from __future__ import annotations

import iniconfig


def sections(text: str) -> list[str]:
    """The section names of an INI text, sorted."""
    return sorted(iniconfig.IniConfig("x.ini", data=text).sections)
