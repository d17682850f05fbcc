"""A throwaway PostgreSQL server in a directory of its own, from the PostgreSQL programs on
the machine (``initdb``, ``pg_ctl``, ``postgres``): what this distribution's tests and
benchmarks run against, and a quick way to try the storage.

It listens on loopback only, with a password (SCRAM), and keeps its socket in its own
directory. PostgreSQL refuses to run as root: run as root, its programs run as the
``postgres`` user (or ``user=``), who then owns the directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: The superuser the server is made with, and its database.
USER = "agex"


class LocalServer:
    """``directory``: where its data lives (default: a new temporary directory, removed by
    :meth:`remove`). ``fsync=False`` trades durability across a machine crash for speed;
    a killed *process* loses nothing either way."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        user: str = "postgres",
        fsync: bool = True,
    ) -> None:
        missing = [p for p in ("initdb", "pg_ctl", "postgres") if _program(p) is None]
        if missing:
            raise RuntimeError(
                f"PostgreSQL's {', '.join(missing)} not found: install the PostgreSQL server "
                "programs (e.g. Debian's postgresql package) and put them on PATH"
            )
        self._temporary = directory is None
        self.root = Path(directory or tempfile.mkdtemp(prefix="agex-pg-"))
        self.data = self.root / "data"
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.fsync = fsync
        self._user = user if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The connection URL of its database, with the password."""
        return f"postgresql://{USER}:{quote(self.password)}@127.0.0.1:{self.port}/{USER}"

    def start(self) -> LocalServer:
        """Make the cluster (the first time) and start the server; returns when it accepts
        connections."""
        if not self.port:
            self.port = _free_port()
        if not self.data.exists():
            self._init()  # which starts it
            return self
        self._ctl(
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate, as ``pg_ctl stop -m``)."""
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        """Stop it and start it again on the same port; connections open now are broken."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """End the server at once, as a crash would (SIGKILL to its postmaster)."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._running():
            time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server stops answering inside this block, as a hung host does (a stalled
        disk, a paused VM): its processes are stopped, and their sockets stay open, so
        nothing tells its clients."""
        self._signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._signal(signal.SIGCONT)

    def _signal(self, number: int) -> None:
        """``number`` to the postmaster and every process it started."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        found = [postmaster]
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    found.append(int(entry.name))
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, number)

    def remove(self) -> None:
        """Stop the server and delete its directory (if it made it)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement: str, *params: Any, database: str = USER) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; its rows (none for a statement without)."""
        import psycopg

        url = self.url.rpartition("/")[0] + "/" + database
        with psycopg.connect(url, autocommit=True) as db:
            cursor = db.execute(statement.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        password = self.root / "password"
        password.write_text(self.password + "\n")
        if self._user is not None:
            shutil.chown(self.root, self._user)
            shutil.chown(password, self._user)
        self.root.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--pwfile",
            str(password),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        )
        password.unlink()
        # The superuser's own database, so that the URL names one.
        self.start()
        self.sql(f"CREATE DATABASE {USER}", database="postgres")

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args)

    def _run(self, program: str, *args: str) -> None:
        found = subprocess.run(
            [str(_program(program)), *args],
            user=self._user,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        if found.returncode != 0:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(
                found.returncode, [program, *args], found.stdout, found.stderr + tail
            )

    def _running(self) -> bool:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return True


def _program(name: str) -> str | None:
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
