"""A server without --state-url loads nothing of PostgreSQL: agex-host-http works where
psycopg is not installed."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from pathlib import Path
from agex_host_http.server.app import Settings, create_app
create_app(Settings(state_dir=Path(sys.argv[1])))
database = ("psycopg", "psycopg_pool", "agex_state_postgres")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in database)
print(",".join(loaded))
"""


def test_a_server_without_a_database_imports_no_database_driver(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == ""
