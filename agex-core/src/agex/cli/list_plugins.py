"""``agex plugins``: what is installed, what it registers, and what failed."""

from __future__ import annotations

import json
import warnings

import click

from agex import plugins as registry
from agex.errors import PluginWarning

COLUMNS = ("kind", "name", "distribution", "version", "status", "error")


def rows() -> list[dict[str, str]]:
    """One row per provider; a plugin that registers nothing (or failed) gets one row."""
    states = registry.states()
    counts: dict[tuple[str, str], int] = {}
    for state in states:
        for p in state.providers:
            counts[p.kind, p.name] = counts.get((p.kind, p.name), 0) + 1
    out = []
    for state in states:
        base = {
            "distribution": state.distribution,
            "version": state.version or "",
            "error": state.detail or "",
        }
        if not state.providers:
            out.append({"kind": "-", "name": "-", "status": state.status, **base})
        for p in sorted(state.providers, key=lambda p: (p.kind, p.name)):
            status = "duplicate" if counts[p.kind, p.name] > 1 else "ok"
            out.append({"kind": p.kind, "name": p.name, "status": status, **base})
    return out


def _table(data: list[dict[str, str]]) -> str:
    widths = {c: max([len(c), *(len(r[c]) for r in data)]) for c in COLUMNS}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in data]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of each failed plugin.")
def plugins(as_json: bool, verbose: bool) -> None:
    """List plugins, their providers, and load errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # the table shows every failure
        data = rows()
        states = registry.states() if verbose else []
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_table(data))
    for state in states:
        if state.traceback:
            click.echo(f"\n{state.distribution} ({state.name}):\n{state.traceback}")
