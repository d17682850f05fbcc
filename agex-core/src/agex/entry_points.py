"""The installed distributions' entry points of one group, found without importing
importlib.metadata.

importlib.metadata's import alone (it pulls in email, zipfile, csv and pathlib) costs more
than our whole budget for the first provider lookup. Entry points are declared in
``<name>-<version>.dist-info/entry_points.txt`` next to the code on ``sys.path``, which a
directory listing and a few small reads find. Archives on ``sys.path`` (zipped eggs,
zipapps) are rare; for those we do use importlib.metadata.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, NamedTuple


class EntryPoint(NamedTuple):
    name: str
    value: str  # "package.module" or "package.module:attribute"
    distribution: str  # canonical name, as pip compares names
    version: str | None

    def load(self) -> Any:
        module, _, attribute = self.value.partition("[")[0].strip().partition(":")
        loaded: Any = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            loaded = getattr(loaded, part)
        return loaded


def canonical(distribution: str) -> str:
    """A distribution's name as pip compares it: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def entry_points(group: str, path: list[str] | None = None) -> list[EntryPoint]:
    """Every entry point in ``group``; where a distribution is on the path twice, the first
    copy wins, as it does for imports."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path if path is None else path:
        if os.path.isdir(entry or "."):
            candidates = _from_directory(entry or ".", group)
        elif os.path.isfile(entry):
            candidates = _from_archive(entry, group)
        else:
            continue
        for distribution, version, points in candidates:
            if distribution not in seen:
                seen.add(distribution)
                found += [EntryPoint(n, v, distribution, version) for n, v in points]
    return found


_Candidate = tuple[str, str | None, list[tuple[str, str]]]


def _from_directory(directory: str, group: str) -> list[_Candidate]:
    out: list[_Candidate] = []
    with os.scandir(directory) as listing:
        for item in listing:
            stem, suffix = os.path.splitext(item.name)
            if suffix not in (".dist-info", ".egg-info"):
                continue
            try:
                with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                text = ""
            name, _, rest = stem.partition("-")
            # An egg-info name may carry a Python tag after the version: drop it.
            version = rest.split("-")[0] or None
            out.append((canonical(name), version, _section(text, group)))
    return out


def _from_archive(archive: str, group: str) -> list[_Candidate]:
    from importlib import metadata

    return [
        (
            canonical(dist.metadata["Name"]),
            dist.version,
            [(ep.name, ep.value) for ep in dist.entry_points if ep.group == group],
        )
        for dist in metadata.distributions(path=[archive])
    ]


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of one ``[group]`` section of an entry_points.txt."""
    points, inside = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            points.append((name.strip(), value.strip()))
    return points
