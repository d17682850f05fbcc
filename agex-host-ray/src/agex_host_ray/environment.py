"""The runtime environment a run's Ray worker gets: what the agent needs, read from this
process the way the modal host reads its image (``agex.remote.dependencies``), merged with
the ``runtime_env`` the user gave.

Distributions installed from a package index become pins of this process's versions
(``pip``); local code, and the distributions installed from a folder (agex's own, in a
checkout), travel as ``py_modules``, with the ``*.dist-info`` folders agex finds plugins by.
Ray installs the pins in a virtualenv that sees the node's own packages, so a node that has
them already installs nothing; ``ray`` itself is the node's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.remote.dependencies import Needs

#: runtime_env fields that install packages another way: agex adds no pins beside them,
#: and what they install is the user's to keep in step with this process.
OTHER_INSTALLERS = ("conda", "uv", "image_uri", "container", "py_executable")


@dataclass(frozen=True)
class Environment:
    """A runner's runtime environments: ``full`` installs ``pins``; ``base`` is the same
    without them, for nodes that have them already (a runner says which it lacks)."""

    full: dict[str, Any]
    base: dict[str, Any]
    pins: tuple[str, ...] = ()


def environment(inferred: dict[str, Any], given: dict[str, Any]) -> Environment:
    """The environments of a runner: ``given`` (the user's) with ``inferred`` merged in."""
    full = merged(inferred, given)
    if full.get("pip") == given.get("pip"):  # no pins of ours: nothing to check
        return Environment(full, full)
    base = merged({k: v for k, v in inferred.items() if k != "pip"}, given)
    if "pip" in given:  # theirs makes a virtualenv anyway: ours go in it
        return Environment(full, full)
    return Environment(full, base, tuple(inferred["pip"]))


def inferred(agent: Agent, tasks: Iterable[Any] = ()) -> dict[str, Any]:
    """What ``agent`` (and ``tasks``) needs on the node, as runtime_env fields."""
    from agex.remote.dependencies import needs

    return fields(needs(agent, tasks))


def fields(needed: Needs) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if needed.pins:
        found["pip"] = list(needed.pins)
    modules = [str(path) for name in needed.sources for path in _paths(name)]
    modules += [str(folder) for folder in needed.metadata]
    if modules:
        found["py_modules"] = modules
    return found


def merged(inferred: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The user's ``given`` runtime_env with what agex inferred added: their fields stay,
    their pins of a distribution win over ours, their modules and variables come with ours."""
    env = dict(given)
    if "env_vars" in inferred:  # a runner's own, passed on to the runners it starts
        env["env_vars"] = {**inferred["env_vars"], **(given.get("env_vars") or {})}
    if "py_modules" in inferred:
        ours = [m for m in inferred["py_modules"] if m not in (given.get("py_modules") or ())]
        env["py_modules"] = [*ours, *(given.get("py_modules") or ())]
    pins = inferred.get("pip")
    if pins and not any(field in given for field in OTHER_INSTALLERS):
        pip = given.get("pip")
        theirs = pip.get("packages", []) if isinstance(pip, dict) else list(pip or [])
        named = {_name(line) for line in theirs}
        packages = [pin for pin in pins if _name(pin) not in named] + theirs
        env["pip"] = {**pip, "packages": packages} if isinstance(pip, dict) else packages
    return env


def _name(requirement: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return requirement  # a URL or a path: never the same as one of our pins


def _paths(module: str) -> list[Path]:
    """Where a module's code is, as Ray ships it: a package's folder, or a module's file."""
    found = sys.modules.get(module)
    folders = [Path(folder) for folder in getattr(found, "__path__", None) or ()]
    if folders:
        return folders
    file = getattr(found, "__file__", None)
    return [] if file is None else [Path(file)]
