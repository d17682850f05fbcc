"""Closed attack: the refusal of live objects under isolation is checked at agent.module(...) and
when the host is set, but ``isolation`` is a plain attribute: set after the registration, it
is not checked. (The run then fails later, at serialization, rather than being refused up
front as the guide says; low severity: fails closed.)

``Agent.isolation`` is a property whose setter runs the same check as the host's.
"""

from __future__ import annotations

import sqlite3

import pytest

from agex import Agent


def test_isolation_set_after_a_live_registration_is_refused() -> None:
    agent = Agent(name="keeper")
    agent.module(sqlite3.connect(":memory:", check_same_thread=False), name="db")
    with pytest.raises(ValueError, match="live object"):
        agent.isolation = "process"
