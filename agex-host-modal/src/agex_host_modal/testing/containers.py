"""How the fake runs a deployed function's inputs: in containers that are processes started
from the image (the default), or threads of the test process (``containers="thread"``).

A container takes one input at a time and is reused once the input ends, as Modal's are.
What crosses between caller and container is pickled both ways, as with Modal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import cloudpickle

from .api import FakeModal, _container, _dumped_error, _Spec

#: How a container process starts: Modal's runtime, here the fake's, runs first.
RUNTIME = Path(__file__).with_name("runtime.py")
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
#: Built environments, kept between test runs: one per interpreter and set of pins.
ENVIRONMENTS = Path(tempfile.gettempdir()) / "agex-fake-modal-environments"

Deliver = Callable[[tuple[str, Any]], None]


class Deployed:
    """One deployed function: its image, built at deploy, and its containers."""

    def __init__(self, fake: FakeModal, spec: _Spec) -> None:
        self.fake, self.spec = fake, spec
        self.idle: list[Any] = []
        for volume in (spec.options.get("volumes") or {}).values():
            volume._op("volume_sizes")  # deploying makes the Volumes it mounts, if asked
        self.image = None if fake.mode == "thread" else Image.build(fake, spec.options["image"])
        self.code = cloudpickle.dumps(spec.raw)

    def container(self) -> Any:
        with self.fake.lock:
            if self.idle:
                return self.idle.pop()
        return self.new_container()

    def new_container(self) -> Any:
        if self.image is None:
            return ThreadContainer(self.fake, self.spec)
        return ProcessContainer(self.fake, self)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Run the generator in a container; what it yields comes back pickled.

        A preempted input (``FakeModal.preempt``) loses its container once that has yielded
        the given number of items (the next one never arrives) and runs again from the start
        in a new container. The caller's stream goes on with what the new one yields, less
        as many items as it already had, as Modal's client skips indexes it has received.
        """
        fake = self.fake
        fake.calls += 1
        with fake.lock:
            preempt = fake.preemptions.pop(0) if fake.preemptions else None
        payload = cloudpickle.dumps((args, kwargs))
        here = asyncio.get_running_loop()
        out: asyncio.Queue[tuple[Any, tuple[str, Any]]] = asyncio.Queue()

        def deliverer(source: Any) -> Deliver:
            def deliver(message: tuple[str, Any]) -> None:
                # Once the caller has gone, the container goes on unheard, as on Modal.
                with contextlib.suppress(RuntimeError):
                    here.call_soon_threadsafe(out.put_nowait, (source, message))

            return deliver

        container = await self._start(payload, deliverer, fresh=preempt is not None)
        received = skip = 0
        while True:
            source, (kind, data) = await out.get()
            if source is not container:
                continue  # from a container preempted since
            if kind == "end":
                return
            if kind == "raise":
                raise _loaded_error(fake, data)
            if kind == "lost":
                raise fake.exception.RemoteError(
                    f"the container running this input stopped: {data}"
                )
            if preempt is not None and received == preempt:
                preempt = None
                container.preempt()
                container = await self._start(payload, deliverer, fresh=True)
                skip = received
                continue
            if skip:
                skip -= 1  # an index the caller has received already
                continue
            received += 1
            yield cloudpickle.loads(data)

    async def _start(
        self, payload: bytes, deliverer: Callable[[Any], Deliver], fresh: bool = False
    ) -> Any:
        """The input started in an idle container or a new one (``fresh``: always new)."""
        # A process takes a while to start: not on the caller's event loop.
        container = await asyncio.to_thread(self.new_container if fresh else self.container)
        deliver = deliverer(container)
        if container.inputs == 0 and self.fake.startup:
            await asyncio.sleep(self.fake.startup)  # a cold start

        def ended(message: tuple[str, Any]) -> None:
            deliver(message)
            if message[0] in ("end", "raise") and not container.preempted:
                self.idle.append(container)

        container.inputs += 1
        container.run(payload, ended)
        return container


def _loaded_error(fake: FakeModal, data: bytes) -> BaseException:
    error: BaseException
    try:
        error = cloudpickle.loads(data)
    except Exception as exc:  # its class does not load here
        error = fake.exception.RemoteError(f"the function raised an error: {exc}")
    if isinstance(error, asyncio.CancelledError):
        error = fake.exception.RemoteError("the function's input was cancelled")
    return error


# -- the image -------------------------------------------------------------------------


class Image:
    """A built image: a virtual environment holding the pinned packages (and Modal's client,
    which Modal puts in every image), and the folder Modal calls ``/root``, holding the local
    sources and files, which is the working directory and on ``PYTHONPATH``."""

    def __init__(self, python: Path, root: Path) -> None:
        self.python, self.root = python, root

    @classmethod
    def build(cls, fake: FakeModal, image: Any) -> Image:
        steps = list(getattr(image, "steps", ()))
        pins: list[str] = []
        root = Path(tempfile.mkdtemp(prefix="image-", dir=fake.root)) / "root"
        root.mkdir()
        for step, value in steps:
            if step == "python":
                here = "{}.{}".format(*sys.version_info)
                if value not in (None, here):
                    raise fake.exception.InvalidError(
                        f"the fake Modal builds images for Python {here} only (the "
                        f"interpreter running the tests), not {value}"
                    )
            elif step == "uv_pip_install":
                pins.extend(value)
            elif step == "add_local_python_source":
                for module in value:
                    _copy_source(fake, module, root)
            elif step == "add_local_dir":
                local, remote, ignore = value
                _copy_dir(fake, local, remote, ignore, root)
        return cls(_environment(fake, pins) / "bin" / "python", root)


def _copy_source(fake: FakeModal, module: str, root: Path) -> None:
    """As ``add_local_python_source`` copies with its default filter: the ``.py`` files only
    (names starting with a dot included; compiled files and data files left out)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise fake.exception.InvalidError(f"module {module!r} not found locally")
    if spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            top = Path(location)
            for file in top.rglob("*.py"):
                target = root / module / file.relative_to(top)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
    elif spec.origin and spec.origin.endswith(".py"):
        shutil.copyfile(spec.origin, root / f"{module}.py")


def _copy_dir(
    fake: FakeModal, local: Path, remote: str, ignore: Callable[[Path], bool], root: Path
) -> None:
    if remote != "/root" and not remote.startswith("/root/"):
        raise fake.exception.InvalidError(f"the fake adds files under /root only, not {remote}")
    target = root / remote.removeprefix("/root").lstrip("/")
    for folder, dirs, files in os.walk(local):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not ignore((here / d).relative_to(local))]
        for file in files:
            relative = (here / file).relative_to(local)
            if not ignore(relative):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(here / file, target / relative)


def _environment(fake: FakeModal, pins: list[str]) -> Path:
    """A virtual environment with exactly ``pins`` and Modal's client installed, built once
    per interpreter and set of pins and kept for later runs."""
    import modal

    wanted = sorted({*pins, f"modal=={modal.__version__}"})
    key = hashlib.sha256(json.dumps([sys.executable, sys.version, wanted]).encode())
    target = ENVIRONMENTS / key.hexdigest()[:20]
    if (target / ".built").exists():
        return target
    ENVIRONMENTS.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".built").exists():
            return target
        building = Path(f"{target}.{secrets.token_hex(4)}")
        uv = _uv(fake)
        try:
            _run(fake, [*uv, "venv", "--quiet", "--python", sys.executable, str(building)])
            python = str(building / "bin" / "python")
            _run(fake, [*uv, "pip", "install", "--quiet", "--python", python, *wanted])
            shutil.rmtree(target, ignore_errors=True)
            os.replace(building, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        (target / ".built").touch()
    return target


def _uv(fake: FakeModal) -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise fake.exception.InvalidError(
        "the fake Modal builds its images with uv: pip install uv (or use "
        'FakeModal(containers="thread"), which builds none)'
    )


def _run(fake: FakeModal, command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise fake.exception.RemoteError(
            f"Image build failed: {' '.join(command[-3:])}\n{done.stderr[-2000:]}"
        )


# -- the workspace's door for containers -----------------------------------------------


class Workspace:
    """A local socket through which container processes reach the fake's Dicts and
    Volumes, and take their inputs."""

    def __init__(self, fake: FakeModal) -> None:
        self.fake = fake
        self.key = secrets.token_bytes(32)
        self.address = str(fake.root / "workspace.sock")
        self.listener = Listener(self.address, "AF_UNIX", authkey=self.key)
        self.arrived: dict[int, Connection] = {}
        self.changed = threading.Condition()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="fake-modal").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                connection = self.listener.accept()
                hello = connection.recv()
            except (OSError, EOFError):
                continue
            if hello[0] == "ops":
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()
            elif hello[0] == "container":
                with self.changed:
                    self.arrived[hello[1]] = connection
                    self.changed.notify_all()

    def _serve(self, connection: Connection) -> None:
        fake = self.fake
        while True:
            try:
                name, args = connection.recv()
            except (EOFError, OSError):
                return
            try:
                with fake.lock:
                    answer = (True, getattr(fake, f"_op_{name}")(*args))
            except Exception as exc:
                answer = (False, exc)
            try:
                connection.send(answer)
            except (OSError, ValueError):
                return

    def wait_for(self, ident: int, process: subprocess.Popen[bytes], log: Path) -> Connection:
        """The control connection of container ``ident``, once its runtime has started."""
        with self.changed:
            while ident not in self.arrived:
                if process.poll() is not None:
                    raise self.fake.exception.RemoteError(
                        f"the container did not start:\n{_tail(log)}"
                    )
                self.changed.wait(0.05)
            return self.arrived.pop(ident)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


# -- containers ------------------------------------------------------------------------


class ProcessContainer:
    """A process started from the image's environment, holding only the secrets'
    variables and what Modal sets, its Volumes mounted as folders of its own."""

    preempted = False
    inputs = 0  #: inputs it has started

    def __init__(self, fake: FakeModal, deployed: Deployed) -> None:
        assert deployed.image is not None
        self.fake, self.image = fake, deployed.image
        with fake.lock:
            self.id = len(fake.containers)
            fake.containers.append(self)
            if fake._server is None:
                fake._server = Workspace(fake)
        server: Workspace = fake._server
        self.folder = fake.root / f"container-{self.id}"
        for part in ("home", "tmp"):
            (self.folder / part).mkdir(parents=True)
        options = deployed.spec.options
        self.mounts = {
            point: (volume.name, str(self.folder / point.strip("/")))
            for point, volume in (options.get("volumes") or {}).items()
        }
        environment = {
            "MODAL_IS_REMOTE": "1",
            "MODAL_TASK_ID": f"ta-fake-{self.id}",
            "PATH": f"{self.image.python.parent}:/usr/bin:/bin",
            "HOME": str(self.folder / "home"),
            "TMPDIR": str(self.folder / "tmp"),
            "PYTHONPATH": str(self.image.root),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for secret in options.get("secrets") or ():
            environment.update(fake.secrets[secret.name])
        self.log = self.folder / "log"
        self._arguments = [server.address, str(self.id)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.image.python), "-s", "-c", _BOOT, str(RUNTIME), *self._arguments],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.image.root,
            )
        assert self.process.stdin is not None
        self.process.stdin.write(server.key.hex().encode() + b"\n")
        self.process.stdin.close()
        self.connection = server.wait_for(self.id, self.process, self.log)
        self.connection.send({"function": deployed.code, "mounts": self.mounts})
        self.listener: Deliver | None = None
        self.stopped = threading.Event()
        self.stopped_cleanly = True
        threading.Thread(target=self._read, daemon=True).start()

    def run(self, payload: bytes, deliver: Deliver) -> None:
        self.listener = deliver
        self.connection.send(("input", payload))

    def preempt(self) -> None:
        """What Modal does to a preempted container: it is gone, mid-input."""
        self.preempted = True
        self.process.kill()

    def _read(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                self.process.wait()
                message = ("lost", f"exit code {self.process.returncode}\n{_tail(self.log)}")
            if message[0] == "stopped":
                self.stopped_cleanly = message[1]
                self.stopped.set()
                continue
            listener = self.listener
            if message[0] in ("end", "raise", "lost"):
                self.listener = None
            if listener is not None:
                listener(message)
            if message[0] == "lost":
                self.stopped.set()
                return

    def stop(self, seconds: float = 10.0) -> bool:
        """Cancel what runs here and end the process; False if its code went on."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.connection.send(("stop", seconds))
            self.stopped.wait(seconds + 5)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        self.connection.close()
        return self.stopped_cleanly


class ThreadContainer:
    """One container played by a thread of the test process: its own event loop, the
    secrets' variables in the environment, and a folder per mounted Volume."""

    preempted = False
    inputs = 0  #: inputs it has started

    def __init__(self, fake: FakeModal, spec: _Spec) -> None:
        self.fake, self.spec = fake, spec
        with fake.lock:
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
        self.running: Any = None

    def run(self, payload: bytes, deliver: Deliver) -> None:
        args, kwargs = cloudpickle.loads(payload)

        async def run() -> None:
            _container.set(self)
            try:
                async for item in self.spec.raw(*args, **kwargs):
                    deliver(("item", cloudpickle.dumps(item)))
                deliver(("end", None))
            except BaseException as exc:
                deliver(("lost", "preempted") if self.preempted else ("raise", _dumped_error(exc)))
                if not isinstance(exc, Exception):
                    raise

        self.running = asyncio.run_coroutine_threadsafe(run(), self.loop)

    def preempt(self) -> None:
        self.preempted = True
        self.loop.call_soon_threadsafe(self.running.cancel)

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
