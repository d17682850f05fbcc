"""What a ray host asks of the cluster, checked when the host is made: a mistake is named
at ``connect_host``, not when the first task reaches the cluster."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

#: Longest timeout a task may ask for (the remote core's limit for an envelope).
LONGEST = 10**7
#: Resources with options of their own.
NAMED = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
#: What Ray keeps for itself, or names nodes with.
RESERVED = {"object_store_memory"}
#: A Ray address: host:port of the cluster's GCS.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


@dataclass(frozen=True)
class Options:
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  #: MiB
    resources: tuple[tuple[str, float], ...] = ()
    runtime_env: tuple[tuple[str, Any], ...] = ()  #: the user's, as given (sorted items)
    timeout: float = 300.0
    concurrency: int = 64
    scaledown_window: float = 300.0

    @classmethod
    def checked(
        cls,
        address: object = None,
        num_cpus: object = None,
        num_gpus: object = None,
        memory: object = None,
        resources: object = None,
        runtime_env: object = None,
        timeout: object = 300.0,
        concurrency: object = 64,
        scaledown_window: object = 300.0,
    ) -> Options:
        return cls(
            address=_address(address),
            num_cpus=1.0 if num_cpus is None else _amount(num_cpus, "num_cpus", "CPUs"),
            num_gpus=0.0 if num_gpus is None else _amount(num_gpus, "num_gpus", "GPUs"),
            memory=_memory(memory),
            resources=_resources(resources),
            runtime_env=_runtime_env(runtime_env),
            timeout=_seconds(timeout, "timeout", LONGEST),
            concurrency=_whole(concurrency),
            scaledown_window=_seconds(scaledown_window, "scaledown_window", 24 * 3600),
        )

    def actor(self) -> dict[str, Any]:
        """The resources of a runner, as ``ray.remote`` takes them (memory in bytes)."""
        found: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            found["memory"] = self.memory * 1024 * 1024
        if self.resources:
            found["resources"] = dict(self.resources)
        return found

    def dump(self) -> dict[str, Any]:
        """Plain JSON that :meth:`checked` takes back."""
        return {
            "address": self.address,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory": self.memory,
            "resources": dict(self.resources) or None,
            "runtime_env": dict(self.runtime_env) or None,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "scaledown_window": self.scaledown_window,
        }


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _address(address: object) -> str | None:
    if address is None or address == "auto":
        return address
    if isinstance(address, str) and address.startswith("ray://"):
        raise ValueError(
            f"address={address!r} is a Ray Client address, and Ray Client does not stream "
            'from actors (Ray refuses num_returns="streaming" through it), which the ray '
            "host does to send events and tokens while a task runs. Give the head node's "
            'address instead ("head:6379", from a machine in the cluster\'s network), or '
            'run your program on the cluster (`ray job submit`), with address="auto"'
        )
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is not None and 0 < int(match.group(2)) < 65536:
        return match.string
    raise ValueError(
        'address must be None (start or join a Ray instance on this machine), "auto" (the '
        'cluster this machine belongs to), or "host:port" of the cluster\'s head node, got '
        f"{address!r}"
    )


def _amount(value: object, name: str, what: str) -> float:
    if not _number(value) or value < 0:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be a number of {what} at least 0 (fractions share one), got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _memory(memory: object) -> int | None:
    if memory is None:
        return None
    if isinstance(memory, int) and not isinstance(memory, bool) and memory > 0:
        return memory
    raise ValueError(
        "memory must be a whole number of MiB the task's Ray worker asks for (e.g. 4096, as "
        f"for the modal host; agex gives Ray bytes), got {memory!r}"
    )


def _resources(resources: object) -> tuple[tuple[str, float], ...]:
    if resources is None:
        return ()
    if not isinstance(resources, dict):
        raise ValueError(
            'resources must be a dict of custom Ray resources and amounts, e.g. {"tpu": 1}, '
            f"got {resources!r}"
        )
    found = []
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resources: a resource name must be a non-empty string, got {name!r}")
        if name in NAMED:
            raise ValueError(f"resources: ask for {name!r} with {NAMED[name]}=, not in resources")
        if name in RESERVED:
            raise ValueError(f"resources: {name!r} is Ray's own, not a resource a task asks for")
        found.append((name, _amount(amount, f"resources[{name!r}]", "units")))
    return tuple(sorted(found))


def _runtime_env(runtime_env: object) -> tuple[tuple[str, Any], ...]:
    if runtime_env is None:
        return ()
    if not isinstance(runtime_env, dict) or not all(isinstance(k, str) for k in runtime_env):
        raise ValueError(
            'runtime_env must be a dict, as Ray takes it (e.g. {"env_vars": {...}, "pip": '
            f"[...]}}), got {runtime_env!r}"
        )
    pip = runtime_env.get("pip")
    if pip is not None and not (
        (isinstance(pip, list) and all(isinstance(p, str) for p in pip))
        or (isinstance(pip, dict) and isinstance(pip.get("packages"), list))
    ):
        raise ValueError(
            'runtime_env["pip"] must be a list of requirements, or a dict with "packages" '
            f"(a list), for agex to add what the agent needs to it; got {pip!r}"
        )
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None and not (
        isinstance(env_vars, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())
    ):
        raise ValueError(f'runtime_env["env_vars"] must map strings to strings, got {env_vars!r}')
    modules = runtime_env.get("py_modules")
    if modules is not None and not (
        isinstance(modules, list) and all(isinstance(m, str) for m in modules)
    ):
        raise ValueError(
            f'runtime_env["py_modules"] must be a list of paths or URIs (strings), got {modules!r}'
        )
    return tuple(sorted(runtime_env.items()))


def _seconds(value: object, name: str, most: float) -> float:
    if not _number(value) or not 0 < value <= most:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be a number of seconds above 0 and at most {most:g}, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _whole(concurrency: object) -> int:
    if (
        isinstance(concurrency, int)
        and not isinstance(concurrency, bool)
        and 1 <= concurrency <= 1000
    ):
        return concurrency
    raise ValueError(
        "concurrency must be a whole number from 1 to 1000: how many runs one Ray worker of "
        f"this host holds at once (1: a worker, and its resources, per run), got {concurrency!r}"
    )
