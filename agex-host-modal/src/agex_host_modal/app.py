"""The Modal app an agent's tasks run in: an image with what the agent's code needs, and one
generator function (``remote.run_task``) with the host's settings and secrets.

Building it touches no network: Modal resolves the secrets and volumes, and builds the image,
only when the app is deployed. One thing is checked here, before anything is sent: that
Modal's image builder supports the image's Python (this process's: the task is pickled here).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agex.errors import RemoteExecutionError
from agex.remote.dependencies import SHIPPED_METADATA, Needs, needs
from agex_host_modal import names, remote, sdk
from agex_host_modal.storage.volumes import mount_point
from agex_host_modal.storage.volumes import volume as state_volume

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex_host_modal.host import ModalHost


def app_name(
    agent: Agent, host: ModalHost, needed: Needs | None = None, tasks: Sequence[Any] = ()
) -> str:
    """The host's ``app``, or a name made from the agent's fingerprint and everything the
    deployment depends on: a change to any of them is a new app, deployed on first use."""
    if host.app is not None:
        return host.app
    needed = needed or needs(agent, tasks)
    settings = [agent.fingerprint, needed.digest(), host.dump_config(), volume_of(agent)]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9-]+", "-", agent.name.lower()).strip("-")[:40] or "agent"
    return f"agex-{readable}-{digest}"


def volume_of(agent: Agent) -> str | None:
    """The Volume the agent's state needs mounted (disk tier), if any."""
    config = agent.state_config
    if config.type != "versioned" or config.path is None:
        return None
    if config.storage == "disk":
        return names.state_volume(config.path)
    if config.storage == "modal-volume":
        return names.check(config.path, "the path of modal-volume state")
    return None


def _not_metadata(path: Path) -> bool:
    return path.name not in SHIPPED_METADATA


def build(agent: Agent, host: ModalHost, tasks: Sequence[Any] = ()) -> Any:
    """The ``modal.App`` that runs ``agent``'s tasks (those given, and any whose modules
    the agent's own needs cover), built offline."""
    modal = sdk.modal()
    needed = needs(agent, tasks)
    check_python(needed.python)
    image = modal.Image.debian_slim(python_version=needed.python).uv_pip_install(*needed.pins)
    if needed.sources:
        image = image.add_local_python_source(*needed.sources)
    for folder in needed.metadata:
        # Source travels without its distribution's metadata, where agex finds plugins.
        image = image.add_local_dir(folder, f"/root/{folder.name}", ignore=_not_metadata)
    volume = volume_of(agent)
    volumes = {} if volume is None else {mount_point(volume): state_volume(volume)}
    app = modal.App(app_name(agent, host, needed, tasks))
    app.function(
        image=image,
        secrets=[modal.Secret.from_name(secret) for secret in host.secrets],
        gpu=host.gpu,
        memory=host.memory,
        timeout=host.function_timeout,
        scaledown_window=host.scaledown_window,
        nonpreemptible=host.nonpreemptible,
        volumes=volumes,
        name=remote.FUNCTION,
        serialized=True,
    )(remote.run_task)
    return app


def check_python(python: str) -> None:
    """Refuse, before anything is sent, an image Python Modal's image builder cannot make."""
    supported = sdk.supported_pythons()
    if supported is None:
        return  # the SDK does not say: Modal's own check, at deploy, still applies
    builder, series = supported
    if python in series:
        return
    which = (
        f"image builder version {builder} (set in this machine's Modal configuration)"
        if builder is not None
        else "image builder"
    )
    raise RemoteExecutionError(
        f"Modal's {which} supports Python {', '.join(series)}, and the image would run "
        f"Python {python}: the image runs the Python of the process that calls the task, "
        "which pickles it. Run agex under one of those versions"
    )
