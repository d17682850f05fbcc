"""The fake's container runtime: what Modal's own code does in a container before and around
the function, run as the first thing in a container process.

It connects to the test process's workspace, mounts the Volumes, makes the image's
``agex_host_modal`` (if the image has it) reach that workspace instead of Modal, loads the
function and runs the inputs it is sent. It imports nothing of agex's: what the function
needs must come from the image.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
import threading
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any


class Link:
    """The container's connection to the workspace, shared by its threads."""

    def __init__(self, address: str, key: bytes) -> None:
        self.lock = threading.Lock()
        self.connection = Client(address, "AF_UNIX", authkey=key)
        self.connection.send(("ops",))

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        with self.lock:
            self.connection.send((name, args))
            ok, value = self.connection.recv()
        if ok:
            return value
        raise value


def _fake_api() -> Any:
    """The fake's Modal-shaped objects, loaded from their files under a name of their own,
    so that loading them makes nothing of agex importable."""
    here = Path(__file__).parent
    spec = importlib.util.spec_from_file_location(
        "_agex_fake_modal", here / "__init__.py", submodule_search_locations=[str(here)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_agex_fake_modal"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("_agex_fake_modal.api")


def main() -> None:
    import cloudpickle

    address, ident = sys.argv[-2], int(sys.argv[-1])
    key = bytes.fromhex(sys.stdin.readline().strip())
    api = _fake_api()
    control = Client(address, "AF_UNIX", authkey=key)
    control.send(("container", ident))
    config = control.recv()
    fake = api.FakeModal.inside(Link(address, key), config["mounts"])
    for name, folder in fake._mounts.values():
        fake.Volume.from_name(name)._snapshot_into(folder)
    try:
        from agex_host_modal import sdk
    except ImportError:
        pass  # then the function cannot load either, and says why
    else:
        sdk._override = fake  # Modal's client here speaks to the fake's workspace
    try:
        function, broken = cloudpickle.loads(config["function"]), None
    except Exception as exc:
        function, broken = None, exc
    _serve(control, function, broken, api)


def _serve(control: Connection, function: Any, broken: Exception | None, api: Any) -> None:
    import cloudpickle

    loop = asyncio.new_event_loop()
    sending = threading.Lock()

    def send(message: tuple[str, Any]) -> None:
        with sending:
            control.send(message)

    async def run(payload: bytes) -> None:
        try:
            if broken is not None:
                raise broken
            args, kwargs = cloudpickle.loads(payload)
            async for item in function(*args, **kwargs):
                send(("item", cloudpickle.dumps(item)))
            send(("end", None))
        except BaseException as exc:
            send(("raise", api._dumped_error(exc)))
            if not isinstance(exc, Exception):
                raise

    async def shutdown(seconds: float) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(loop.shutdown_default_executor(), seconds)
            cleanly = True
        except TimeoutError:
            cleanly = False
        send(("stopped", cleanly))
        loop.stop()

    def read() -> None:
        while True:
            try:
                kind, data = control.recv()
            except (EOFError, OSError):
                kind, data = "stop", 10.0
            if kind == "input":
                loop.call_soon_threadsafe(loop.create_task, run(data))
            elif kind == "stop":
                loop.call_soon_threadsafe(loop.create_task, shutdown(data))
                return

    threading.Thread(target=read, daemon=True).start()
    asyncio.set_event_loop(loop)
    loop.run_forever()
    sys.stdout.flush()
    os._exit(0)  # agent code's threads that did not stop do not hold the container


if __name__ == "__main__":
    main()
