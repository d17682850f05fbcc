"""``agex.view``: look inside an agent, or a session's state, without running anything.

``view(agent)`` shows what defines the agent: its model, host, state, limits, and what its
code can use, described as the model is told. ``view(agent.state(session))`` summarises the
session: its variables (type and size, read from the commits' records and the stored bytes;
no value is loaded, so nothing agent code shaped runs here) and its recent commits.

A :class:`View` prints as text in a terminal and renders as HTML or Markdown in a notebook.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agex import prompt
from agex.agent import Agent
from agex.errors import StateIntegrityError
from agex.notebook import (
    HISTORY_COLUMNS,
    escaped,
    fenced,
    history_rows,
    inline,
    panel_html,
    pre_html,
    table_html,
    table_markdown,
)
from agex.printable import visible
from agex.state.versioned import Commit, VersionedState

#: Configuration keys whose values are not shown, should a host put a secret in its config.
_SECRET = re.compile(r"token|password|passwd|api_?key|secret_?key|credential|auth", re.I)

VARIABLE_COLUMNS = ("name", "type", "size", "set at #")


@dataclass(frozen=True)
class Section:
    """One part of a view: ``fields`` (name, value pairs), a table (``columns`` and
    ``rows``), or a block of ``text``."""

    title: str
    fields: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    text: str = ""


@dataclass(frozen=True)
class View:
    """What :func:`view` shows: text in a terminal (``str``, ``repr``), HTML or Markdown in a
    notebook."""

    title: str
    sections: tuple[Section, ...]

    def __str__(self) -> str:
        out = [visible(self.title)]
        for section in self.sections:
            out += ["", f"{visible(section.title)}:"]
            if section.fields:
                wide = max(len(k) for k, _ in section.fields)
                out += [f"  {visible(k):<{wide}}  {_one_line(v)}" for k, v in section.fields]
            if section.columns:
                out += _text_table(section.columns, section.rows)
            if section.text:
                out += ["  " + line for line in visible(section.text).splitlines()]
        # Pieces are made visible as they are measured; the whole again, whatever composed it.
        return visible("\n".join(out))

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = []
        for section in self.sections:
            body = f"<div><strong>{escaped(section.title)}</strong></div>"
            if section.fields:
                body += table_html(None, section.fields)
            if section.columns:
                body += table_html(section.columns, section.rows)
            if section.text:
                body += pre_html(section.text)
            parts.append(body)
        return panel_html(self.title, "".join(parts))

    def _repr_markdown_(self) -> str:
        out = [f"**{inline(self.title)}**"]
        for section in self.sections:
            out.append(f"*{inline(section.title)}*")
            if section.fields:
                out.append("\n".join(f"- **{inline(k)}**: {inline(v)}" for k, v in section.fields))
            if section.columns:
                out.append(table_markdown(section.columns, section.rows))
            if section.text:
                out.append(fenced(section.text))
        return "\n\n".join(out) + "\n"


def view(target: Agent | VersionedState, *, commits: int = 10) -> View:
    """What ``target`` is: an :class:`~agex.agent.Agent`, or a session's state
    (``agent.state(session)``); for a state, its ``commits`` most recent commits are listed
    (``state.history()`` has them all)."""
    if type(commits) is not int or commits < 0:
        raise ValueError(f"commits must be a whole number, 0 or more; not {commits!r}")
    if isinstance(target, Agent):
        return _agent_view(target)
    if isinstance(target, VersionedState):
        return _state_view(target, commits)
    raise TypeError(
        f"view shows an Agent or a session's state (agent.state(session)), not "
        f"{type(target).__name__}"
    )


# -- an agent ------------------------------------------------------------------------------


def _agent_view(agent: Agent) -> View:
    llm = agent.llm
    model = (
        "not set: from AGEX_LLM_PROVIDER and AGEX_LLM_MODEL at the first task"
        if llm is None
        else f"{llm.provider}, model {llm.model or 'default'}"
    )
    state = agent.state_config
    where = ", ".join(
        f"{k} {v}" for k, v in (("storage", state.storage), ("path", state.path)) if v
    )
    fields = (
        ("name", agent.name),
        ("primer", agent.primer),
        ("model", model),
        ("host", _host(agent)),
        ("state", state.type + (f" ({where})" if where else "")),
        ("max_iterations", str(agent.max_iterations)),
        ("timeout", "none" if agent.timeout is None else f"{agent.timeout:g} s"),
        ("isolation", agent.isolation or "as the host decides"),
        ("max_memory_mb", "none" if agent.max_memory_mb is None else str(agent.max_memory_mb)),
        ("fingerprint", agent.fingerprint[:16]),
    )
    registered = "\n".join(prompt.capabilities(agent)) or "nothing registered"
    imports = ", ".join(agent.policy.importable_names())
    can_use = f"{registered}\nand it may import: {imports}"
    return View(
        f"agent {agent.name}",
        (Section("agent", fields=fields), Section("its code can use", text=can_use)),
    )


def _host(agent: Agent) -> str:
    host = agent.host
    try:
        config = dict(host.dump_config())
    except Exception:
        return type(host).__name__
    provider = config.pop("provider", type(host).__name__)
    options = ", ".join(
        f"{k}={'<hidden>' if _SECRET.search(k) else repr(_shown(v))}"
        for k, v in sorted(config.items())
    )
    return f"{provider} ({options})" if options else str(provider)


#: The credentials part of an address (``scheme://user:password@``).
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def _shown(value: Any) -> Any:
    """A host option as shown: an address keeps its host, not the credentials in it."""
    return _USERINFO.sub("***@", value) if isinstance(value, str) else value


# -- a session's state ---------------------------------------------------------------------


def _state_view(state: VersionedState, limit: int) -> View:
    head = state.head()
    index = state.tree(head)
    variables = tuple(
        (name, entry.facts.type or "?", _size(state, index, name, head), str(entry.depth))
        for name, entry in sorted(index.items())
    )
    recent = _recent(state, head, limit)
    older = recent[-1].parent if recent else None
    fields = (
        ("head", head or "none: the session has no commits yet"),
        ("variables", str(len(index))),
        ("commits shown", f"{len(recent)}" + (", older in state.history()" if older else "")),
    )
    sections = [Section("session", fields=fields)]
    if variables:
        sections.append(Section("variables", columns=VARIABLE_COLUMNS, rows=variables))
    if recent:
        sections.append(
            Section("recent commits", columns=HISTORY_COLUMNS, rows=tuple(history_rows(recent)))
        )
    return View(f"session {state.session} of {state.namespace}", tuple(sections))


def _recent(state: VersionedState, head: str | None, limit: int) -> list[Commit]:
    """The ``limit`` newest commits, read from the head back: no more of the chain."""
    out: list[Commit] = []
    at = head
    while at is not None and len(out) < limit:
        commit = state.commit_of(at)
        out.append(commit)
        at = commit.parent
    return out


def _size(state: VersionedState, index: Any, name: str, head: str | None) -> str:
    """The size of a variable's stored bytes, checked but never loaded (``shaped``: the
    bytes a worker wrote are only measured here)."""
    try:
        size = len(state.fetch(index, [name], head, shaped=True)[name])
    except StateIntegrityError:
        return "unreadable: missing or damaged (agex state check)"
    return _bytes(size)


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# -- text ----------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(visible(text).split())


def _text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [[_one_line(c) for c in columns], *[[_one_line(v) for v in row] for row in rows]]
    wide = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return [
        "  " + "  ".join(v.ljust(w) for v, w in zip(row, wide, strict=True)).rstrip()
        for row in cells
    ]
