"""What an agent's loop needs installed where it runs, read from this process: the remote
hosts that install it there (Modal's image, Ray's runtime environment) share this reading.

The modules its registrations come from, its sub-agents' (recursively), the modules of the
tasks it runs (their functions and the types they take and return), its model client's
SDK, and agex itself. A module installed from a package index becomes a pin of the installed
version (``name==version``); a module installed from a folder, or found on ``sys.path``
without any distribution, travels as source, and so do the modules it imports; a
distribution installed from a folder also ships its metadata (``*.dist-info``), which is how
agex finds plugins, and its own requirements are pinned. Everything comes out sorted, so
the same agent always gives the same image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

#: An ``agex.agent.Agent`` (a layer above this one).
Agent = Any

#: Always there: agex's core and the serializer tasks travel with, at exactly this process's
#: version. (The host's own distribution is there as the agent's host's module.)
ALWAYS = ("agex", "cloudpickle")
#: Our own distributions, which an editable install hides from the module -> distribution map.
OURS = {
    "agex": "agex-core",
    "agex_host_http": "agex-host-http",
    "agex_host_modal": "agex-host-modal",
    "agex_host_ray": "agex-host-ray",
    "agex_state_disk": "agex-state-disk",
    "agex_state_postgres": "agex-state-postgres",
}


@dataclass(frozen=True)
class Needs:
    python: str  #: major.minor of this interpreter
    pins: tuple[str, ...]  #: ``name==version``, sorted
    sources: tuple[str, ...]  #: top-level modules added as source, sorted
    #: The ``*.dist-info`` folders of the distributions whose code travels as source.
    metadata: tuple[Path, ...] = ()

    def digest(self) -> str:
        """Changes when anything installed changes, local sources' contents included."""
        hashed = hashlib.sha256(json.dumps([self.python, self.pins, self.sources]).encode())
        for module in self.sources:
            for file in _source_files(module):
                hashed.update(file.name.encode() + file.read_bytes())
        for folder in self.metadata:
            for name in SHIPPED_METADATA:
                file = folder / name
                hashed.update(folder.name.encode() + (file.read_bytes() if file.exists() else b""))
        return hashed.hexdigest()


#: What agex reads of a distribution's metadata: its name and version, and its plugins.
SHIPPED_METADATA = ("METADATA", "entry_points.txt")


def needs(agent: Agent, tasks: Iterable[Any] = ()) -> Needs:
    """What ``agent`` (and the ``tasks`` of it that will run) needs where it runs. The
    distributions its host's class names in ``provides`` are there already (Modal's client
    in a Modal container, Ray on a Ray node): they are not pinned."""
    provided = {_canonical(name) for name in getattr(type(agent.host), "provides", ())}
    referenced = set(ALWAYS)  # modules, by their full names
    distributions: set[str] = set()
    for one in agents(agent):
        referenced.update(one.policy.modules)
        referenced.update(_module_of(value) for value in one.policy.names.values())
        referenced.add(type(one.host).__module__)
        referenced.update(_storage_modules(one))
        distributions.update(getattr(one.llm, "requires", ()))
    for task in tasks:
        referenced.update(_modules_of_task(task))
    owners = importlib.metadata.packages_distributions()
    # What a module of local code (not from a package index) imports must be there too.
    modules = {_top(name) for name in referenced}
    for name in sorted(referenced):
        if name in sys.modules and not _indexed(_top(name), owners):
            modules.update(_imported_by(name))
    pins: set[str] = set()
    sources: set[str] = set()
    metadata: set[Path] = set()
    todo = sorted(modules - _BUILT_IN)
    while todo:
        module = todo.pop()
        found = owners.get(module) or ([OURS[module]] if module in OURS else None)
        if found:
            distributions.update(found)
        elif module not in sources and _local(module):
            sources.add(module)  # local code without a distribution: it travels
            more = sorted(_imported_by_package(module) - _BUILT_IN - modules)
            modules.update(more)
            todo.extend(more)
    pending, seen = sorted(distributions), set()
    while pending:
        name = _canonical(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ValueError(
                f"the agent needs the distribution {name!r}, which is not installed here"
            ) from None
        if name in provided:
            continue
        if _from_an_index(dist):
            pins.add(f"{name}=={dist.version}")
        else:  # installed from a folder: its code travels, its requirements are installed
            sources.update(_modules_of(dist))
            folder = _metadata_folder(dist)
            if folder is not None:
                metadata.add(folder)
            pending.extend(_requirements_of(dist))
    return Needs(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        pins=tuple(sorted(pins)),
        sources=tuple(sorted(sources)),
        metadata=tuple(sorted(metadata)),
    )


def _storage_modules(agent: Agent) -> set[str]:
    """Where the storage of the agent's versioned state is made: its plugin's module (the
    loop opens the storage where it runs)."""
    config = agent.state_config
    if config.type != "versioned" or not config.storage:
        return set()
    from agex import plugins
    from agex.errors import ProviderError

    try:
        return {plugins.resolve("storage", config.storage).factory.__module__}
    except ProviderError:  # not installed here: the agent could not have been made
        return set()


def _modules_of_task(task: Any) -> set[str]:
    """The modules a shipped task loads from: those of the types it takes and returns. (Its
    function travels by value: ``@agent.task`` took its name, so it is not importable.)"""
    import inspect

    func: Any = getattr(task, "func", None)
    found: set[str] = set()
    if not callable(func):
        return found
    try:
        signature = inspect.signature(func, eval_str=True)
    except Exception:  # an annotation that does not resolve here does not resolve there
        return found
    annotations = [p.annotation for p in signature.parameters.values()]
    for annotation in [*annotations, signature.return_annotation]:
        for kind in _types_in(annotation):
            found.add(kind.__module__)
    return found


def _types_in(annotation: Any) -> Iterator[type]:
    """The classes an annotation names, generics' arguments included."""
    import typing

    if isinstance(annotation, type):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _types_in(argument)


def _indexed(module: str, owners: Mapping[str, list[str]]) -> bool:
    """Whether ``module`` comes from a distribution installed from a package index, whose
    own requirements install what it imports."""
    for name in owners.get(module, ()):
        try:
            if _from_an_index(importlib.metadata.distribution(name)):
                return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def _local(module: str) -> bool:
    """Whether ``module`` is loaded from files here: a module, a package, or a namespace
    package (which has a path but no file)."""
    found = sys.modules.get(module)
    return bool(getattr(found, "__file__", None) or getattr(found, "__path__", None))


def _imported_by_package(module: str) -> set[str]:
    """What a local module imports, and every loaded submodule of it: the image holds
    them all, and importing any of them imports what it imports."""
    found = set()
    for name in [n for n in list(sys.modules) if n == module or n.startswith(module + ".")]:
        found |= _imported_by(name)
    found.discard(module)
    return found


def _imported_by(module: str) -> set[str]:
    """The top-level modules a local module's globals come from: what importing it imports."""
    found = set()
    for value in list(vars(sys.modules[module]).values()):
        owner = (
            value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        )
        if isinstance(owner, str) and owner:
            found.add(_top(owner))
    found.discard(module)
    return found


def _metadata_folder(dist: importlib.metadata.Distribution) -> Path | None:
    for file in dist.files or ():
        if file.name == "METADATA" and file.parent.name.endswith(".dist-info"):
            return Path(str(dist.locate_file(file))).parent
    return None


_BUILT_IN = {*sys.stdlib_module_names, "__main__", "builtins", "__future__", ""}


def agents(agent: Agent) -> Iterator[Agent]:
    """The agent and, recursively, the agents whose tasks it calls."""
    seen: set[int] = set()
    todo = [agent]
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        yield one
        for value in one.policy.names.values():
            task = getattr(value, "__agex_task__", None)
            if task is not None:
                todo.append(task.agent)


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
    folders = [Path(folder) for folder in getattr(found, "__path__", None) or ()]
    if folders:  # a package, namespace packages included
        return sorted(p for f in folders for p in f.rglob("*.py") if "__pycache__" not in p.parts)
    file = getattr(found, "__file__", None)
    return [] if file is None else [Path(file)]
