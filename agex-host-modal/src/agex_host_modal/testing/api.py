"""The Modal-shaped objects of the fake (``App``, ``Image``, ``Secret``, ``Function``,
``Dict``, ``Volume``) and the workspace they act on.

This module is loaded in the containers too (from its file, so that it adds nothing
importable to the image): there a ``FakeModal`` is a client of the test process's workspace
(``FakeModal.inside``), and every operation on a Dict or a Volume goes over the socket.
It imports only the standard library, cloudpickle and, lazily, ``modal``'s exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import functools
import inspect
import io
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cloudpickle

#: How long a Dict entry lives without a read or a write.
DICT_TTL = 7 * 24 * 3600.0
#: The largest Dict put or update the fake takes, its pickled keys and values together; a
#: larger one raises RequestSizeError, as Modal does. Modal documents 100 MiB as its largest
#: Dict object and no size for a request as a whole.
DICT_REQUEST_LIMIT = 100 * 1024 * 1024

#: The thread-played container the current code runs in (``containers="thread"``).
_container: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "agex_fake_modal_container", default=None
)


def _modal_module(name: str) -> Any:
    """Modal's own exception and type modules, so errors are the ones agex catches."""
    import importlib

    return importlib.import_module(f"modal.{name}")


def _dumped_error(exc: BaseException) -> bytes:
    """An exception as it crosses from a container to its caller."""
    try:
        dumped: bytes = cloudpickle.dumps(exc)
    except Exception:
        dumped = cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return dumped


# -- methods as Modal offers them ------------------------------------------------------


class BlockingCall(RuntimeError):
    """A Modal method called in its blocking form on a running event loop, which stalls
    every task on that loop (the real SDK warns; the fake refuses)."""


def _method(func: Callable[..., Any]) -> Any:
    """A method as Modal offers it: ``obj.method(...)`` blocks, ``obj.method.aio(...)`` is
    its async form. The blocking form refuses to run on a running event loop."""
    return _Both(func)


class _Both:
    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__signature__ = inspect.signature(func)
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return _BoundBoth(self.func, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.__name__}() is a method: call it on an instance")


class _BoundBoth:
    def __init__(self, func: Callable[..., Any], obj: Any) -> None:
        self.func, self.obj = func, obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.func(self.obj, *args, **kwargs)
        raise BlockingCall(
            f"{type(self.obj).__name__}.{self.func.__name__}() blocks the running event "
            f"loop: call {type(self.obj).__name__}.{self.func.__name__}.aio() from async code"
        )

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        if inspect.isgeneratorfunction(self.func):
            return _async_iter(self.func(self.obj, *args, **kwargs))
        if getattr(self.func, "_context", False):
            return _AsyncContext(self.func(self.obj, *args, **kwargs))
        return _returning(self.func(self.obj, *args, **kwargs))


async def _returning(value: Any) -> Any:
    return value


async def _async_iter(items: Iterator[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def _context(func: Callable[..., Iterator[Any]]) -> Any:
    """A context manager whose ``.aio`` form is an async context manager."""
    managed = contextlib.contextmanager(func)
    managed._context = True  # type: ignore[attr-defined]
    return managed


class _AsyncContext:
    def __init__(self, manager: Any) -> None:
        self.manager = manager

    async def __aenter__(self) -> Any:
        return self.manager.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return self.manager.__exit__(*exc)


class FakeModal:
    """One fake Modal workspace: apps, Dicts, Volumes and secrets.

    In the test process it holds them; in a container (``FakeModal.inside``) it is a client
    of the test process's workspace, as Modal's own client is of Modal's servers.
    """

    def __init__(
        self,
        *,
        credentials: bool = True,
        clock: Callable[[], float] = time.time,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        containers: str = "process",
    ) -> None:
        if containers not in ("process", "thread"):
            raise ValueError('containers must be "process" or "thread"')
        self.credentials = credentials
        self.clock = clock
        self.secrets = {name: dict(values) for name, values in (secrets or {}).items()}
        self.mode = containers
        self.apps: dict[str, dict[str, Any]] = {}
        self.deploys: list[str] = []  #: app names, in the order they were deployed
        self.dicts: dict[str, dict[Any, tuple[bytes, float]]] = {}
        #: When each Dict was made (``Dict.info().created_at``), in seconds; set one before
        #: first use to fake an older Dict.
        self.dict_created: dict[str, float] = {}
        #: The largest Dict put or update taken; see DICT_REQUEST_LIMIT.
        self.dict_request_limit = DICT_REQUEST_LIMIT
        self.volumes: dict[str, dict[str, bytes]] = {}
        self.calls = 0  #: function calls made
        self.containers: list[Any] = []
        self.startup = 0.0  #: seconds a new container takes before its first input runs
        self.preemptions: list[int] = []  #: see preempt()
        self.lock = threading.RLock()
        self.root = Path(tempfile.mkdtemp(prefix="agex-fake-modal-"))
        #: What thread containers' secrets replaced in os.environ, put back by close().
        self.environ: dict[str, str | None] = {}
        #: Inside a container: the link to the workspace and where its Volumes are mounted.
        self._link: Any = None
        self._mounts: dict[str, tuple[str, Path]] = {}
        self._server: Any = None
        self._bind()

    @classmethod
    def inside(cls, link: Any, mounts: Mapping[str, tuple[str, str]]) -> FakeModal:
        """The SDK as a container sees it: every Dict and Volume call goes through ``link``."""
        fake = cls.__new__(cls)
        fake.credentials, fake.secrets, fake.mode = True, {}, "process"
        fake.clock = lambda: link.call("clock", ())  # the workspace's clock, as tests move it
        fake.apps, fake.deploys, fake.dicts, fake.volumes = {}, [], {}, {}
        fake.calls, fake.containers, fake.environ = 0, [], {}
        fake.startup, fake.preemptions, fake.dict_created = 0.0, [], {}
        fake.lock = threading.RLock()
        fake._link, fake._server = link, None
        fake._mounts = {point: (name, Path(folder)) for point, (name, folder) in mounts.items()}
        fake._bind()
        return fake

    def _bind(self) -> None:
        self.exception = _modal_module("exception")
        self.volume = _modal_module("volume")
        self.config = _Config(self)
        bound = {"_fake": self}
        self.App = type("App", (FakeApp,), bound)
        self.Image = type("Image", (FakeImage,), bound)
        self.Secret = type("Secret", (FakeSecret,), bound)
        self.Dict = type("Dict", (FakeDict,), bound)
        self.Volume = type("Volume", (FakeVolume,), bound)
        self.Function = type("Function", (FakeFunction,), bound)

    def is_local(self) -> bool:
        return self._link is None and _container.get() is None

    def mounted(self, path: str) -> str:
        """Where the current container sees a Volume mounted at ``path``."""
        mounts = self._container_mounts()
        return str(mounts[path][1]) if path in mounts else path

    def _container_mounts(self) -> Mapping[str, tuple[str, Path]]:
        if self._link is not None:
            return self._mounts
        container = _container.get()
        return {} if container is None else container.mounts

    def preempt(self, after: int = 0) -> None:
        """Preempt the next function input once its container has yielded ``after`` items:
        that container stops, and Modal runs the input again in a new one."""
        with self.lock:
            self.preemptions.append(after)

    def close(self) -> None:
        """Stop the containers, forget their files and put the environment back.

        As when Modal stops an app, inputs still running are cancelled; agent code that
        does not stop then is an error, not code left running behind the test.
        """
        stuck = [c.id for c in self.containers if not c.stop()]
        for variable, value in self.environ.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if stuck:
            raise RuntimeError(f"containers {stuck} still ran agent code once cancelled")

    def _connect(self) -> None:
        """What Modal's client does first: find credentials."""
        if not self.credentials and self.is_local():
            raise self.exception.AuthError("Token missing. Could not authenticate client.")

    # -- the workspace's operations: here, or over the link from a container ------------

    def op(self, name: str, *args: Any) -> Any:
        if self._link is not None:
            return self._link.call(name, args)
        self._connect()
        with self.lock:
            return getattr(self, f"_op_{name}")(*args)

    def _table(self, table: dict[str, Any], kind: str, name: str, create: bool) -> Any:
        contents = table.get(name)
        if contents is None:
            if not create:
                raise self.exception.NotFoundError(f"{kind} '{name}' not found")
            contents = table[name] = {}
        return contents

    def _entries(self, name: str, create: bool) -> dict[Any, tuple[bytes, float]]:
        data: dict[Any, tuple[bytes, float]] = self._table(self.dicts, "Dict", name, create)
        now = self.clock()
        for key in [k for k, (_, used) in data.items() if now - used > DICT_TTL]:
            del data[key]
        return data

    def _op_dict_get(self, name: str, create: bool, key: Any) -> bytes | None:
        data = self._entries(name, create)
        if key not in data:
            return None
        value = data[key][0]
        data[key] = (value, self.clock())  # a read keeps the entry
        return value

    def _fits(self, method: str, pickled: Mapping[Any, bytes]) -> None:
        size = sum(len(cloudpickle.dumps(k)) + len(v) for k, v in pickled.items())
        if size > self.dict_request_limit:
            raise self.exception.RequestSizeError(f"Dict.{method} request is too large")

    def _op_dict_put(self, name: str, create: bool, key: Any, value: bytes, skip: bool) -> bool:
        self._fits("put", {key: value})
        data = self._entries(name, create)
        if skip and key in data:
            return False
        data[key] = (value, self.clock())
        return True

    def _op_dict_update(self, name: str, create: bool, items: dict[Any, bytes]) -> None:
        self._fits("update", items)
        data = self._entries(name, create)
        now = self.clock()
        data.update({k: (v, now) for k, v in items.items()})

    def _op_dict_pop(self, name: str, create: bool, key: Any) -> bytes | None:
        found = self._entries(name, create).pop(key, None)
        return None if found is None else found[0]

    def _op_dict_keys(self, name: str, create: bool) -> list[Any]:
        return list(self._entries(name, create))

    def _op_dict_created(self, name: str, create: bool) -> float:
        self._entries(name, create)
        return self.dict_created.setdefault(name, time.time())

    def _op_clock(self) -> float:
        return self.clock()

    def _files(self, name: str, create: bool) -> dict[str, bytes]:
        files: dict[str, bytes] = self._table(self.volumes, "Volume", name, create)
        return files

    def _op_volume_files(self, name: str, create: bool) -> dict[str, bytes]:
        return dict(self._files(name, create))

    def _op_volume_commit(
        self, name: str, create: bool, removed: list[str], changed: dict[str, bytes]
    ) -> None:
        files = self._files(name, create)
        for path in removed:
            files.pop(path, None)
        files.update(changed)

    def _op_volume_read(self, name: str, create: bool, path: str) -> bytes | None:
        return self._files(name, create).get(path)

    def _op_volume_upload(
        self, name: str, create: bool, uploaded: dict[str, bytes], force: bool
    ) -> None:
        files = self._files(name, create)
        if not force and uploaded.keys() & files.keys():
            raise FileExistsError(sorted(uploaded.keys() & files.keys())[0])
        files.update(uploaded)

    def _op_volume_remove(self, name: str, create: bool, path: str) -> bool:
        return self._files(name, create).pop(path, None) is not None

    def _op_volume_sizes(self, name: str, create: bool) -> dict[str, int]:
        return {path: len(data) for path, data in self._files(name, create).items()}


class _Config:
    def __init__(self, fake: FakeModal) -> None:
        self.config = self
        self._fake = fake

    def get(self, key: str, *, profile: str | None = None, use_env: bool = True) -> Any:
        if key in ("token_id", "token_secret"):
            return f"fake-{key}" if self._fake.credentials else None
        return None


# -- definitions ----------------------------------------------------------------------


class FakeImage:
    """What the image holds, step by step; the fake builds it when the app is deployed."""

    _fake: FakeModal

    def __init__(self, steps: tuple[tuple[str, Any], ...]) -> None:
        self.steps = steps

    @classmethod
    def debian_slim(cls, python_version: str | None = None, force_build: bool = False) -> Any:
        return cls((("python", python_version),))

    def uv_pip_install(self, *packages: str | list[str]) -> Any:
        flat = tuple(
            p for group in packages for p in ([group] if isinstance(group, str) else group)
        )
        return type(self)((*self.steps, ("uv_pip_install", flat)))

    def add_local_python_source(self, *modules: str, copy: bool = False) -> Any:
        return type(self)((*self.steps, ("add_local_python_source", modules)))

    def add_local_dir(
        self,
        local_path: str | Path,
        remote_path: str,
        *,
        copy: bool = False,
        ignore: Any = [],  # noqa: B006 (the real default)
    ) -> Any:
        if not callable(ignore):
            raise TypeError("the fake takes ignore= only as a callable")
        return type(self)((*self.steps, ("add_local_dir", (Path(local_path), remote_path, ignore))))


class FakeSecret:
    _fake: FakeModal

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        required_keys: list[str] = [],  # noqa: B006 (the real default)
        client: Any = None,
    ) -> Any:
        return cls(name)


class _Spec:
    """A function as deployed: its code, and the options it was declared with."""

    def __init__(self, raw: Callable[..., Any], options: dict[str, Any]) -> None:
        self.raw, self.options = raw, options


class FakeApp:
    _fake: FakeModal

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.functions: dict[str, _Spec] = {}

    def function(
        self,
        *,
        image: Any = None,
        secrets: Any = None,
        gpu: str | list[str] | None = None,
        serialized: bool = False,
        volumes: dict[Any, Any] = {},  # noqa: B006 (the real default)
        memory: int | tuple[int, int] | None = None,
        scaledown_window: int | None = None,
        timeout: int = 300,
        name: str | None = None,
        nonpreemptible: bool = False,
    ) -> Callable[[Callable[..., Any]], Any]:
        options = {
            "image": image,
            "secrets": secrets,
            "gpu": gpu,
            "serialized": serialized,
            "volumes": volumes,
            "memory": memory,
            "scaledown_window": scaledown_window,
            "timeout": timeout,
            "name": name,
            "nonpreemptible": nonpreemptible,
        }
        if scaledown_window is not None and not 2 <= scaledown_window <= 3600:
            raise self._fake.exception.InvalidError(
                "`scaledown_window` must be between 2 and 3600 (inclusive)"
            )

        def decorate(raw: Callable[..., Any]) -> Any:
            if options.get("serialized"):
                raw = cloudpickle.loads(cloudpickle.dumps(raw))
            self.functions[options.get("name") or raw.__qualname__] = _Spec(raw, options)
            return raw

        return decorate

    @_method
    def deploy(
        self,
        *,
        name: str | None = None,
        environment_name: str | None = None,
        tag: str = "",
        client: Any = None,
        strategy: str = "rolling",
    ) -> Any:
        fake = self._fake
        fake._connect()
        app = name or self.name
        if app is None:
            raise fake.exception.InvalidError("an app needs a name to be deployed")
        for spec in self.functions.values():
            for secret in spec.options.get("secrets") or ():
                if secret.name not in fake.secrets:
                    raise fake.exception.NotFoundError(f"Secret '{secret.name}' not found")
        from .containers import Deployed

        deployed = {n: Deployed(fake, spec) for n, spec in self.functions.items()}
        with fake.lock:
            fake.apps[app] = deployed
            fake.deploys.append(app)
        return self


class _AioMethod:
    """A method used as Modal's are in async code: ``obj.method.aio(...)``."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__signature__ = inspect.signature(func)
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return _Bound(functools.partial(self.func, obj))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the fake offers this method only as .aio(...)")


class _Bound:
    def __init__(self, aio: Callable[..., Any]) -> None:
        self.aio = aio


class FakeFunction:
    _fake: FakeModal

    def __init__(self, app_name: str, name: str) -> None:
        self.app_name, self.name = app_name, name
        self._deployed: Any = None

    @classmethod
    def from_name(
        cls,
        app_name: str,
        name: str,
        *,
        version: int | None = None,
        environment_name: str | None = None,
        client: Any = None,
    ) -> Any:
        return cls(app_name, name)

    @_method
    def hydrate(self, client: Any = None) -> Any:
        fake = self._fake
        fake._connect()
        deployed = fake.apps.get(self.app_name, {}).get(self.name)
        if deployed is None:
            raise fake.exception.NotFoundError(
                f"Lookup failed for Function '{self.name}' from the '{self.app_name}' app"
            )
        self._deployed = deployed
        return self

    async def _remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if self._deployed is None:
            await self.hydrate.aio()
        async for item in self._deployed.call(args, kwargs):
            yield item

    remote_gen = _AioMethod(_remote_gen)  # only ``.aio`` is faked


# -- Dict ------------------------------------------------------------------------------


class _NoDefault:
    def __repr__(self) -> str:
        return "..."  # as Modal's own sentinel shows itself


_NO_DEFAULT = _NoDefault()


class _Named:
    """A Dict or a Volume: found by name in the workspace, made on first use if asked."""

    _fake: FakeModal
    kind: str

    def __init__(self, name: str, create_if_missing: bool) -> None:
        self.name, self.create_if_missing = name, create_if_missing

    def _op(self, op: str, *args: Any) -> Any:
        return self._fake.op(op, self.name, self.create_if_missing, *args)


class FakeDict(_Named):
    kind = "Dict"

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        client: Any = None,
    ) -> Any:
        _check_name(cls._fake, name, cls.kind)
        return cls(name, create_if_missing)

    @_method
    def get(self, key: Any, default: Any | None = None) -> Any:
        found = self._op("dict_get", key)
        return default if found is None else cloudpickle.loads(found)

    @_method
    def info(self) -> Any:
        from modal.types import DictInfo

        made = self._op("dict_created")
        when = datetime.datetime.fromtimestamp(made, datetime.UTC)
        return DictInfo(name=self.name, created_at=when, created_by=None)

    @_method
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        result: bool = self._op("dict_put", key, cloudpickle.dumps(value), skip_if_exists)
        return result

    @_method
    def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        items = {**(other or {}), **kwargs}
        self._op("dict_update", {k: cloudpickle.dumps(v) for k, v in items.items()})

    @_method
    def pop(self, key: Any, default: Any = _NO_DEFAULT) -> Any:
        found = self._op("dict_pop", key)
        if found is not None:
            return cloudpickle.loads(found)
        if default is _NO_DEFAULT:
            raise KeyError(key)
        return default

    @_method
    def keys(self) -> Iterator[Any]:
        yield from self._op("dict_keys")

    @_method
    def contains(self, key: Any) -> bool:
        return key in self._op("dict_keys")


# -- Volume ----------------------------------------------------------------------------


class FakeVolume(_Named):
    kind = "Volume"

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        version: Any = None,
        create_options: Any = None,
        client: Any = None,
    ) -> Any:
        _check_name(cls._fake, name, cls.kind)
        return cls(name, create_if_missing)

    def _snapshot_into(self, folder: Path) -> None:
        """Mount: the folder holds the Volume as committed now."""
        files = self._op("volume_files")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path, data in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self._base(folder).write_bytes(cloudpickle.dumps(files))

    @staticmethod
    def _base(folder: Path) -> Path:
        return folder.parent / f".{folder.name}.base"

    def _mounted(self) -> Path:
        for name, folder in self._fake._container_mounts().values():
            if name == self.name:
                return folder
        raise RuntimeError("commit() and reload() work only in a container that mounts it")

    @_method
    def commit(self) -> None:
        """Publish what this container changed since it mounted or reloaded."""
        folder = self._mounted()
        with self._fake.lock:  # one commit at a time in this container
            base: dict[str, bytes] = cloudpickle.loads(self._base(folder).read_bytes())
            now = {
                str(p.relative_to(folder)): p.read_bytes()
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".")
            }
            removed = sorted(base.keys() - now.keys())
            changed = {p: d for p, d in now.items() if base.get(p) != d}
            self._op("volume_commit", removed, changed)
            self._base(folder).write_bytes(cloudpickle.dumps(now))

    @_method
    def reload(self) -> None:
        """See what others committed; this container's own uncommitted changes are lost."""
        with self._fake.lock:
            self._snapshot_into(self._mounted())

    @_method
    def read_file(self, path: str) -> Iterator[bytes]:
        data = self._op("volume_read", path.lstrip("/"))
        if data is None:
            raise FileNotFoundError(f"No such file: {path}")
        yield data

    @_method
    @_context
    def batch_upload(self, force: bool = False) -> Iterator[Any]:
        batch = _Upload()
        yield batch
        self._op("volume_upload", batch.files, force)

    @_method
    def remove_file(self, path: str, recursive: bool = False) -> None:
        if not self._op("volume_remove", path.lstrip("/")):
            raise FileNotFoundError(f"No such file: {path}")

    @_method
    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]:
        module = self._fake.volume
        prefix = path.strip("/")
        sizes = self._op("volume_sizes")
        return [
            module.FileEntry(path=p, type=module.FileEntryType.FILE, mtime=0, size=size)
            for p, size in sorted(sizes.items())
            if not prefix or p.startswith(prefix + "/")
        ]


class _Upload:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_file(self, local_file: Any, remote_path: Any, mode: int | None = None) -> None:
        data = (
            local_file.read()
            if isinstance(local_file, io.IOBase)
            else Path(local_file).read_bytes()
        )
        self.files[str(remote_path).lstrip("/")] = data


#: Modal's rule for the names of Dicts, Volumes and apps.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _check_name(fake: FakeModal, name: str, kind: str) -> None:
    if not _NAME.fullmatch(name):
        raise fake.exception.InvalidError(f"Invalid {kind} name: {name!r}")


#: The members of the real SDK each fake class stands in for, for the signature check.
FAKED = {
    "App": ("__init__", "function", "deploy"),
    "Image": ("debian_slim", "uv_pip_install", "add_local_python_source", "add_local_dir"),
    "Secret": ("from_name",),
    "Function": ("from_name", "hydrate", "remote_gen"),
    "Dict": ("from_name", "info", "get", "put", "update", "pop", "keys", "contains"),
    "Volume": (
        "from_name",
        "commit",
        "reload",
        "read_file",
        "batch_upload",
        "remove_file",
        "listdir",
    ),
}
