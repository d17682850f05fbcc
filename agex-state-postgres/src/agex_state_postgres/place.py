"""Where the database is, as the process that runs the loop is configured: what connects to
it, how it is named in messages (never with its password), and what to do when it fails."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from agex.errors import StateLoadError

#: The database agex keeps state in, for this process (unless a server was given one).
URL_ENV = "AGEX_POSTGRES_URL"
#: libpq's variables, read when neither a URL nor URL_ENV is given.
_LIBPQ = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


@dataclass(frozen=True)
class Place:
    #: What libpq connects with ("": its environment alone); it may hold the password, so
    #: it is in no repr, and a place is never pickled.
    conninfo: str = field(repr=False)
    #: Where that came from, for messages.
    source: str = ""

    def __reduce__(self) -> Any:
        raise TypeError(
            "a PostgreSQL place is not pickled: it may hold a password; it is read where "
            "the loop runs"
        )

    @classmethod
    def find(cls, url: str | None = None, source: str = "the url given") -> Place:
        """``url`` if given, else ``$AGEX_POSTGRES_URL``, else libpq's environment."""
        if url:
            found = cls(url, source)
        elif os.environ.get(URL_ENV):
            found = cls(os.environ[URL_ENV], f"${URL_ENV}")
        else:
            named = [var for var in _LIBPQ if os.environ.get(var)]
            found = cls("", "libpq's environment" + (f" ({', '.join(named)})" if named else ""))
        found.parts()  # a malformed URL is refused now, by what it is
        return found

    def parts(self) -> dict[str, Any]:
        """The connection's parameters, as libpq will read them (environment included)."""
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = None if _misread(self.conninfo) else dict(conninfo_to_dict(self.conninfo))
        except ProgrammingError:
            given = None  # (psycopg's message may quote the URL, password and all)
        if given is not None and _garbled(given):
            given = None
        if given is None:
            raise StateLoadError(
                f"{self.source} is not a PostgreSQL connection URL that names its host and "
                "its port (a number) as meant; give one like "
                "postgresql://user@host:5432/database (the password in $PGPASSWORD or "
                "~/.pgpass, or in the URL, where a '/', '@', ':' or '%' in it is "
                "percent-encoded: '/' as %2F)"
            )
        for var, name in (("PGHOST", "host"), ("PGPORT", "port"), ("PGDATABASE", "dbname")):
            given.setdefault(name, os.environ.get(var))
        given.setdefault("user", os.environ.get("PGUSER"))
        return given

    def __str__(self) -> str:
        parts = self.parts()
        host = parts.get("host") or parts.get("hostaddr") or "the local socket"
        port = f":{parts['port']}" if re.search(r"\d", str(parts.get("port") or "")) else ""
        database = parts.get("dbname") or parts.get("user")
        named = f"PostgreSQL database {database}" if database else "default PostgreSQL database"
        user = f" as {parts['user']}" if parts.get("user") else ""
        return f"{named} on {host}{port}{user} (from {self.source})"

    def options(self, timeout: float) -> dict[str, Any]:
        """Connection options, each unless the URL (or libpq's environment) sets it: give up
        connecting after a while; and notice a peer gone silent (a network partition, a
        host powered off) within about ``timeout``: TCP keepalives on an idle connection,
        a limit on how long sent data may stay unacknowledged on a busy one."""
        wanted: dict[str, Any] = {
            "connect_timeout": max(2, min(int(timeout), 10)),
            "keepalives": 1,
            "keepalives_idle": max(1, int(timeout / 3)),
            "keepalives_interval": max(1, int(timeout / 6)),
            "keepalives_count": 3,
            "tcp_user_timeout": max(1000, int(timeout * 1000)),
        }
        given = self.parts()
        if os.environ.get("PGCONNECT_TIMEOUT"):
            given["connect_timeout"] = os.environ["PGCONNECT_TIMEOUT"]
        return {name: value for name, value in wanted.items() if given.get(name) is None}

    def connect(self, timeout: float, **more: Any) -> Any:
        """A new connection of its own (autocommit; ``more``: further libpq parameters), or
        StateLoadError saying why not."""
        import psycopg

        try:
            options = {**self.options(timeout), **more}
            return psycopg.connect(self.conninfo, autocommit=True, **options)
        except psycopg.Error as exc:
            failure = StateLoadError(f"could not connect to the {self}: {self.cause(exc)}")
        raise failure  # outside the handler: no psycopg error (nor connection) as its context

    def cause(self, exc: BaseException) -> str:
        """What PostgreSQL reported, without the password, and what to do about it."""
        from psycopg_pool import PoolTimeout

        text = self.scrub(" ".join(str(exc).split()))
        state = str(getattr(exc, "sqlstate", "") or "")
        where = f"in {self.source}" + (
            "" if self.source.startswith("libpq") else " (or libpq's PG* variables)"
        )
        # (A failure to connect has no SQLSTATE: libpq's message says what it was.)
        if state == "3D000" or re.search(r'database ".*" does not exist', text):
            return f"{text}; create that database, or name another {where}"
        if re.search(r'role ".*" does not exist', text):
            return f"{text}; create that user, or name another {where}"
        if "pg_hba.conf" in text:
            return (
                f"{text}; have the server's administrator allow this user from this host "
                "in pg_hba.conf, or connect as another"
            )
        if state in ("28P01", "28000") or "password" in text.lower():
            return f"{text}; check the user and password {where}"
        if state.startswith("42501") or "permission denied" in text:
            return f"{text}; grant the user what it lacks (see docs/state.md)"
        if state == "53300" or "too many clients" in text or "remaining connection slots" in text:
            return (
                f"{text}; the server has no connection to spare: give the storage a smaller "
                "pool_size (agex serve: --state-pool-size), or the server a larger "
                "max_connections"
            )
        if state == "55P03":
            return (
                f"{text}; another writer held what this one needed for longer than the "
                "storage's timeout: try again, or give the storage a larger timeout (agex serve: "
                "--state-timeout)"
            )
        import psycopg

        unreached = state == "" and isinstance(exc, psycopg.OperationalError | PoolTimeout)
        if unreached or state.startswith("08") or state in ("57P01", "57P03"):
            return f"{text}; check that the server runs and the host and port {where}"
        return text

    def diagnose(self, timeout: float) -> str:
        """Why no connection could be had within ``timeout`` seconds."""
        try:
            self.connect(timeout).close()
        except StateLoadError as exc:
            return exc.message.split(": ", 1)[-1]
        return (
            f"every connection stayed busy for {timeout:g} s; give the storage a larger "
            "pool_size or timeout (agex serve: --state-pool-size, --state-timeout)"
        )

    def scrub(self, text: str) -> str:
        """``text`` without this place's password, however it is written."""
        password = self.parts().get("password") or os.environ.get("PGPASSWORD")
        if password:
            for form in {password, quote(password), quote(password, safe="")}:
                text = text.replace(form, "***")
        return text


def _misread(conninfo: str) -> bool:
    """Whether libpq would misread this URL, so that messages naming its host would show a
    piece of the password: an unencoded ``/`` in the password ends the address early (an
    ``@`` then comes after it), and an unencoded ``@`` splits it at the wrong place (two in
    the address)."""
    scheme, sep, rest = conninfo.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        return False
    address = re.split(r"[/?]", rest, maxsplit=1)[0]
    _, slash, after = rest.partition("/")
    return address.count("@") > 1 or (bool(slash) and "@" in after.split("?", 1)[0])


def _garbled(parts: dict[str, Any]) -> bool:
    """Whether what libpq read holds what no host or port is: a sign that it took part of a
    password for them."""
    hosts = str(parts.get("host") or "")
    port = str(parts.get("port") or "")
    return "@" in hosts or not re.fullmatch(r"\d*(,\d*)*", port)
