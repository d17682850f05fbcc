"""An in-process stand-in for the part of the Modal SDK the modal host uses, for tests.

``with sdk.use(FakeModal()) as fake:`` and agents on the modal host run "on Modal" in this
process: deploying records the app; a function call runs the generator in a worker thread
that plays a container (its own event loop, the secrets' variables in the environment, its
Volumes mounted as folders holding a snapshot); Dict and Volume data live in the fake's
memory. What crosses between caller and container is pickled both ways, as with Modal.

It mirrors Modal's behaviour where agex relies on it:

- ``Dict``: entries expire after 7 days without a read or write (``clock`` is injectable);
  ``put(skip_if_exists=True)`` is atomic.
- ``Volume``: a container sees the Volume as it was when the container started or last
  called ``reload()``; its writes reach others when it calls ``commit()``.
- ``Function.from_name(...).hydrate()`` raises NotFoundError until the app is deployed;
  a deploy fails on a secret that does not exist.
- Without credentials, anything that would reach Modal raises AuthError.

Every method here has the name and parameters of the real one (a test compares them with
the installed ``modal``); it accepts a subset of the parameters, the ones agex passes.
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

_container: contextvars.ContextVar[_Container | None] = contextvars.ContextVar(
    "agex_fake_modal_container", default=None
)


def _modal_module(name: str) -> Any:
    """Modal's own exception and type modules, so errors are the ones agex catches."""
    import importlib

    return importlib.import_module(f"modal.{name}")


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
    """One fake Modal workspace: apps, Dicts, Volumes and secrets, in memory."""

    def __init__(
        self,
        *,
        credentials: bool = True,
        clock: Callable[[], float] = time.time,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.credentials = credentials
        self.clock = clock
        self.secrets = {name: dict(values) for name, values in (secrets or {}).items()}
        self.apps: dict[str, dict[str, _Deployed]] = {}
        self.deploys: list[str] = []  #: app names, in the order they were deployed
        self.dicts: dict[str, dict[Any, tuple[bytes, float]]] = {}
        #: When each Dict was made (``Dict.info().created_at``), in seconds; set one before
        #: first use to fake an older Dict.
        self.dict_created: dict[str, float] = {}
        self.volumes: dict[str, dict[str, bytes]] = {}
        self.calls = 0  #: function calls made
        self.containers: list[_Container] = []
        self.lock = threading.RLock()
        self.root = Path(tempfile.mkdtemp(prefix="agex-fake-modal-"))
        #: What containers' secrets replaced in os.environ, put back by close().
        self.environ: dict[str, str | None] = {}
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
        return _container.get() is None

    def mounted(self, path: str) -> str:
        """Where the current container sees a Volume mounted at ``path``."""
        container = _container.get()
        if container is None or path not in container.mounts:
            return path
        return str(container.mounts[path][1])

    def close(self) -> None:
        """Stop the containers, forget their files and put the environment back.

        As when Modal stops an app, inputs still running are cancelled; agent code that
        does not stop then is an error, not a thread left spinning in the test process.
        """
        stuck = [c.id for c in self.containers if not c.stop()]
        for variable, value in self.environ.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        shutil.rmtree(self.root, ignore_errors=True)
        if stuck:
            raise RuntimeError(f"containers {stuck} still ran agent code once cancelled")

    def _connect(self) -> None:
        """What Modal's client does first: find credentials."""
        if not self.credentials and _container.get() is None:
            raise self.exception.AuthError("Token missing. Could not authenticate client.")


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
    _fake: FakeModal

    def __init__(self, steps: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        self.steps = steps

    @classmethod
    def debian_slim(cls, python_version: str | None = None, force_build: bool = False) -> Any:
        return cls((("python", (python_version or "",)),))

    def uv_pip_install(self, *packages: str | list[str]) -> Any:
        flat = tuple(
            p for group in packages for p in ([group] if isinstance(group, str) else group)
        )
        return type(self)((*self.steps, ("uv_pip_install", flat)))

    def add_local_python_source(self, *modules: str, copy: bool = False) -> Any:
        return type(self)((*self.steps, ("add_local_python_source", modules)))


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
        with fake.lock:
            fake.apps[app] = {n: _Deployed(fake, spec) for n, spec in self.functions.items()}
            fake.deploys.append(app)
        return self


# -- calling a deployed function -------------------------------------------------------


class _Container:
    """One container of a deployed function: a thread with an event loop, the secrets in
    the environment, and a folder per mounted Volume holding the container's snapshot."""

    def __init__(self, fake: FakeModal, spec: _Spec) -> None:
        self.fake = fake
        self.id = len(fake.containers)
        fake.containers.append(self)
        self.mounts: dict[str, tuple[str, Path]] = {}
        for point, volume in (spec.options.get("volumes") or {}).items():
            folder = fake.root / f"container-{self.id}" / point.strip("/")
            self.mounts[point] = (volume.name, folder)
            volume._snapshot_into(folder)
        for secret in spec.options.get("secrets") or ():
            for variable, value in fake.secrets[secret.name].items():
                fake.environ.setdefault(variable, os.environ.get(variable))
                os.environ[variable] = value
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self, seconds: float = 10.0) -> bool:
        """Cancel what runs here and wait for its threads; False if they went on."""

        async def cancel_all() -> bool:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(self.loop.shutdown_default_executor(), seconds)
            except TimeoutError:
                return False
            return True

        try:
            return asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(seconds + 5)
        except TimeoutError:
            return False
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(seconds)

    def folder_of(self, volume: str) -> Path | None:
        for name, folder in self.mounts.values():
            if name == volume:
                return folder
        return None


class _Deployed:
    def __init__(self, fake: FakeModal, spec: _Spec) -> None:
        self.fake, self.spec = fake, spec
        self.idle: list[_Container] = []

    def container(self) -> _Container:
        with self.fake.lock:
            if self.idle:
                return self.idle.pop()
        return _Container(self.fake, self.spec)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Run the generator in a container; what it yields comes back pickled."""
        fake = self.fake
        fake.calls += 1
        args, kwargs = cloudpickle.loads(cloudpickle.dumps((args, kwargs)))
        container = self.container()
        out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        here = asyncio.get_running_loop()

        def send(kind: str, data: Any = None) -> None:
            # Once the caller has gone, the container goes on unheard, as on Modal.
            with contextlib.suppress(RuntimeError):
                here.call_soon_threadsafe(out.put_nowait, (kind, data))

        async def run() -> None:
            _container.set(container)
            try:
                async for item in self.spec.raw(*args, **kwargs):
                    send("item", cloudpickle.dumps(item))
                send("end")
            except BaseException as exc:
                send("raise", exc)
                if not isinstance(exc, Exception):
                    raise

        running = asyncio.run_coroutine_threadsafe(run(), container.loop)
        try:
            while True:
                kind, data = await out.get()
                if kind == "end":
                    break
                if kind == "raise":
                    if isinstance(data, asyncio.CancelledError):
                        raise fake.exception.RemoteError("the function's input was cancelled")
                    raise data
                yield cloudpickle.loads(data)
        finally:
            # As with Modal, the container goes on when its caller stops listening; it is
            # reused once its input ends.
            running.add_done_callback(lambda _: self.idle.append(container))


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
        self._deployed: _Deployed | None = None

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
            self.hydrate()
        assert self._deployed is not None
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

    def _contents(self, table: dict[str, Any]) -> Any:
        """This object's contents in ``table`` (the fake's Dicts or Volumes)."""
        fake = self._fake
        fake._connect()
        contents = table.get(self.name)
        if contents is None:
            if not self.create_if_missing:
                raise fake.exception.NotFoundError(f"{self.kind} '{self.name}' not found")
            contents = table[self.name] = {}
        return contents


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

    @contextlib.contextmanager
    def _data(self) -> Iterator[dict[Any, tuple[bytes, float]]]:
        fake = self._fake
        with fake.lock:
            data: dict[Any, tuple[bytes, float]] = self._contents(fake.dicts)
            now = fake.clock()
            for key in [k for k, (_, used) in data.items() if now - used > DICT_TTL]:
                del data[key]
            yield data

    @_method
    def get(self, key: Any, default: Any | None = None) -> Any:
        with self._data() as data:
            if key not in data:
                return default
            value = data[key][0]
            data[key] = (value, self._fake.clock())  # a read keeps the entry
            return cloudpickle.loads(value)

    @_method
    def info(self) -> Any:
        from modal.types import DictInfo

        with self._data():
            made = self._fake.dict_created.setdefault(self.name, time.time())
        when = datetime.datetime.fromtimestamp(made, datetime.UTC)
        return DictInfo(name=self.name, created_at=when, created_by=None)

    @_method
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        pickled = cloudpickle.dumps(value)
        self._fits("put", {key: pickled})
        with self._data() as data:
            if skip_if_exists and key in data:
                return False
            data[key] = (pickled, self._fake.clock())
            return True

    @_method
    def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        items = {**(other or {}), **kwargs}
        pickled = {k: cloudpickle.dumps(v) for k, v in items.items()}
        self._fits("update", pickled)
        with self._data() as data:
            now = self._fake.clock()
            data.update({k: (v, now) for k, v in pickled.items()})

    @_method
    def pop(self, key: Any, default: Any = _NO_DEFAULT) -> Any:
        with self._data() as data:
            if key in data:
                return cloudpickle.loads(data.pop(key)[0])
            if default is _NO_DEFAULT:
                raise KeyError(key)
            return default

    @_method
    def keys(self) -> Iterator[Any]:
        with self._data() as data:
            listed = list(data)
        yield from listed

    @_method
    def contains(self, key: Any) -> bool:
        with self._data() as data:
            return key in data

    def _fits(self, method: str, pickled: Mapping[Any, bytes]) -> None:
        size = sum(len(cloudpickle.dumps(k)) + len(v) for k, v in pickled.items())
        if size > DICT_REQUEST_LIMIT:
            raise self._fake.exception.RequestSizeError(f"Dict.{method} request is too large")


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

    def _files(self) -> dict[str, bytes]:
        files: dict[str, bytes] = self._contents(self._fake.volumes)
        return files

    def _snapshot_into(self, folder: Path) -> None:
        """Mount: the folder holds the Volume as committed now."""
        with self._fake.lock:
            files = dict(self._files())
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path, data in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (folder.parent / f".{folder.name}.base").write_bytes(cloudpickle.dumps(files))

    def _mounted(self) -> Path:
        container = _container.get()
        folder = None if container is None else container.folder_of(self.name)
        if folder is None:
            raise RuntimeError("commit() and reload() work only in a container that mounts it")
        return folder

    @_method
    def commit(self) -> None:
        """Publish what this container changed since it mounted or reloaded."""
        folder = self._mounted()
        base_file = folder.parent / f".{folder.name}.base"
        with self._fake.lock:
            base: dict[str, bytes] = cloudpickle.loads(base_file.read_bytes())
            now = {
                str(p.relative_to(folder)): p.read_bytes()
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".")
            }
            files = self._files()
            for path in base.keys() - now.keys():
                files.pop(path, None)
            files.update({p: d for p, d in now.items() if base.get(p) != d})
            base_file.write_bytes(cloudpickle.dumps(now))

    @_method
    def reload(self) -> None:
        """See what others committed; this container's own uncommitted changes are lost."""
        self._snapshot_into(self._mounted())

    @_method
    def read_file(self, path: str) -> Iterator[bytes]:
        with self._fake.lock:
            data = self._files().get(path.lstrip("/"))
        if data is None:
            raise FileNotFoundError(f"No such file: {path}")
        yield data

    @_method
    @_context
    def batch_upload(self, force: bool = False) -> Iterator[Any]:
        batch = _Upload()
        yield batch
        with self._fake.lock:
            files = self._files()
            if not force and batch.files.keys() & files.keys():
                raise FileExistsError(sorted(batch.files.keys() & files.keys())[0])
            files.update(batch.files)

    @_method
    def remove_file(self, path: str, recursive: bool = False) -> None:
        with self._fake.lock:
            files = self._files()
            if files.pop(path.lstrip("/"), None) is None:
                raise FileNotFoundError(f"No such file: {path}")

    @_method
    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]:
        module = self._fake.volume
        prefix = path.strip("/")
        with self._fake.lock:
            files = dict(self._files())
        return [
            module.FileEntry(path=p, type=module.FileEntryType.FILE, mtime=0, size=len(d))
            for p, d in sorted(files.items())
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


def _check_name(fake: FakeModal, name: str, kind: str) -> None:
    from agex_host_modal import names

    if not names.valid(name):
        raise fake.exception.InvalidError(f"Invalid {kind} name: {name!r}")


#: The members of the real SDK each fake class stands in for, for the signature check.
FAKED = {
    "App": ("__init__", "function", "deploy"),
    "Image": ("debian_slim", "uv_pip_install", "add_local_python_source"),
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
