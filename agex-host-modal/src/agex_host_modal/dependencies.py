"""What an agent's loop needs installed where it runs, read from this process.

The modules its registrations come from, its sub-agents' (recursively), its model client's
SDK, and agex itself. A module installed from a package index becomes a pin of the installed
version (``name==version``); a module installed from a folder, or found on ``sys.path``
without any distribution, travels as source, and its own requirements are pinned instead.
Everything comes out sorted, so the same agent always gives the same image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agex.agent import Agent

#: Always there: agex's core and this provider (the container imports both), and the
#: serializer tasks travel with, at exactly this process's version.
ALWAYS = ("agex", "agex_host_modal", "cloudpickle")
#: Modal puts its own client in every container.
PROVIDED = {"modal"}
#: Our own distributions, which an editable install hides from the module -> distribution map.
OURS = {
    "agex": "agex-core",
    "agex_host_http": "agex-host-http",
    "agex_host_modal": "agex-host-modal",
    "agex_state_disk": "agex-state-disk",
}


@dataclass(frozen=True)
class Needs:
    python: str  #: major.minor of this interpreter
    pins: tuple[str, ...]  #: ``name==version``, sorted
    sources: tuple[str, ...]  #: top-level modules added as source, sorted

    def digest(self) -> str:
        """Changes when anything installed changes, local sources' contents included."""
        hashed = hashlib.sha256(json.dumps([self.python, self.pins, self.sources]).encode())
        for module in self.sources:
            for file in _source_files(module):
                hashed.update(file.name.encode() + file.read_bytes())
        return hashed.hexdigest()


def needs(agent: Agent) -> Needs:
    modules = set(ALWAYS)
    distributions: set[str] = set()
    for one in agents(agent):
        modules.update(_top(name) for name in one.policy.modules)
        for value in one.policy.names.values():
            modules.add(_top(_module_of(value)))
        modules.add(_top(type(one.host).__module__))
        distributions.update(getattr(one.llm, "requires", ()))
    owners = importlib.metadata.packages_distributions()
    pins: set[str] = set()
    sources: set[str] = set()
    for module in sorted(modules - _BUILT_IN):
        found = owners.get(module) or ([OURS[module]] if module in OURS else None)
        if found:
            distributions.update(found)
        elif module in sys.modules and getattr(sys.modules[module], "__file__", None):
            sources.add(module)
    todo, seen = sorted(distributions), set()
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ValueError(
                f"the agent needs the distribution {name!r}, which is not installed here"
            ) from None
        if name in PROVIDED:
            continue
        if _from_an_index(dist):
            pins.add(f"{name}=={dist.version}")
        else:  # installed from a folder: its code travels, its requirements are installed
            sources.update(_modules_of(dist))
            todo.extend(_requirements_of(dist))
    return Needs(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        pins=tuple(sorted(pins)),
        sources=tuple(sorted(sources)),
    )


_BUILT_IN = {*sys.stdlib_module_names, "__main__", "builtins", "__future__", ""}


def agents(agent: Agent) -> Iterator[Agent]:
    """The agent and, recursively, the agents whose tasks it calls."""
    from agex.task import Task

    seen: set[int] = set()
    todo = [agent]
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        yield one
        for value in one.policy.names.values():
            for cell in getattr(value, "__closure__", None) or ():
                contents = cell.cell_contents
                if isinstance(contents, Task):
                    todo.append(contents.agent)


def _module_of(value: Any) -> str:
    if isinstance(value, ModuleType):
        return value.__name__
    module = getattr(value, "__module__", None)
    if not isinstance(module, str):
        module = type(value).__module__
    return module


def _top(module: str) -> str:
    return module.partition(".")[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _from_an_index(dist: importlib.metadata.Distribution) -> bool:
    """Installed from a package index, so the image can install the same version; an
    install from a folder or a URL says where it came from in ``direct_url.json``."""
    return dist.read_text("direct_url.json") is None


def _modules_of(dist: importlib.metadata.Distribution) -> set[str]:
    name = _canonical(dist.metadata["Name"])
    ours = {module for module, owner in OURS.items() if owner == name}
    if ours:
        return ours
    top = dist.read_text("top_level.txt")
    if top:
        return {line.strip() for line in top.splitlines() if line.strip()}
    owners = importlib.metadata.packages_distributions()
    return {
        module
        for module, names in owners.items()
        if name in {_canonical(n) for n in names} and not module.startswith("_")
    }


def _requirements_of(dist: importlib.metadata.Distribution) -> list[str]:
    """The names of the distributions ``dist`` requires here (markers evaluated, no extras)."""
    from packaging.requirements import Requirement

    names = []
    for line in dist.requires or ():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def _source_files(module: str) -> list[Path]:
    found = sys.modules.get(module)
    file = getattr(found, "__file__", None)
    if file is None:
        return []
    path = Path(file)
    if path.name == "__init__.py":
        return sorted(p for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [path]
