"""How agex's objects look in a notebook: the HTML (``_repr_html_``) and Markdown
(``_repr_markdown_``) of events, of a session's history, and of the tables ``agex.view``
shows.

What the model or agent code wrote is shown, never run or rendered as markup: in HTML it is
escaped; in Markdown it sits in a fence longer than any run of backticks in it, or has every
punctuation character escaped. Its control and format characters (bidirectional overrides
among them) are shown as escapes (``agex.printable``), as a terminal shows them: every piece
of text reaches the page through :func:`escaped`, :func:`inline` or :func:`fenced`.

Colours are translucent tints over the notebook's own colours, and text keeps the theme's
colour, so light and dark themes both read.

Events and commits are read through their public fields (an event's ``to_dict()``), so this
module imports nothing of agex but ``agex.printable`` and stays at the bottom of its layers.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from agex.printable import visible

#: A tint per kind of event: a border and a faint background of that hue; grey otherwise.
_TINTS = {
    "ActionEvent": "56, 139, 253",
    "SuccessEvent": "46, 160, 67",
    "ErrorEvent": "218, 54, 51",
    "FailEvent": "218, 54, 51",
    "ClarifyEvent": "210, 153, 34",
    "CancelledEvent": "210, 153, 34",
    "ConflictEvent": "210, 153, 34",
}
_GREY = "127, 127, 127"
_CELL = "padding: 2px 8px; border: 1px solid rgba(127, 127, 127, 0.3); text-align: left;"
_PRE = "margin: 4px 0; white-space: pre-wrap; background: rgba(127, 127, 127, 0.1);"
_NOTE = "opacity: 0.7; font-size: smaller;"


class CommitLike(Protocol):
    """What a history row shows of a commit (``agex.state.versioned.Commit``)."""

    @property
    def id(self) -> str: ...
    @property
    def depth(self) -> int: ...
    @property
    def time(self) -> float: ...
    @property
    def task(self) -> str | None: ...
    @property
    def completed(self) -> bool: ...
    @property
    def events(self) -> tuple[Any, ...]: ...
    @property
    def changes(self) -> Mapping[str, Any]: ...


# -- making text inert ---------------------------------------------------------------------


def escaped(text: object) -> str:
    """``text`` as HTML shows it, never as markup."""
    return html.escape(visible(text), quote=True)


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def inline(text: object) -> str:
    """``text`` as Markdown shows it on one line: whitespace runs made one space, every
    ASCII punctuation character backslash-escaped (no emphasis, link, HTML or table cell
    can start inside it)."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(visible(text).split()))


def fenced(text: object, info: str = "text") -> str:
    """``text`` as a fenced Markdown block: its fence is longer than any run of backticks in
    the text, so the text cannot close it."""
    body = visible(text)
    runs = [len(run) for run in re.findall(r"`+", body)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{info}\n{body.rstrip(chr(10))}\n{fence}"


def utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


# -- building blocks -----------------------------------------------------------------------


def pre_html(text: object) -> str:
    return f'<pre style="{_PRE}">{escaped(text)}</pre>'


def table_html(columns: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """A table of escaped cells; without ``columns``, one without a header row."""
    head = "".join(f'<th style="{_CELL}">{escaped(c)}</th>' for c in columns or ())
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{escaped(v)}</td>' for v in row) + "</tr>"
        for row in rows
    )
    head = f"<tr>{head}</tr>" if head else ""
    return f'<table style="border-collapse: collapse;">{head}{body}</table>'


def table_markdown(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(inline(c) for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(inline(v) or " " for v in row) + " |" for row in rows]
    return "\n".join(lines)


def panel_html(title: str, body: str, tint: str = _GREY, note: str = "") -> str:
    """A titled box; ``title`` and ``note`` are escaped here, ``body`` is HTML already."""
    style = (
        f"border-left: 4px solid rgba({tint}, 0.8); background: rgba({tint}, 0.07); "
        "padding: 4px 10px; margin: 4px 0;"
    )
    foot = f'<div style="{_NOTE}">{escaped(note)}</div>' if note else ""
    return f'<div style="{style}"><strong>{escaped(title)}</strong>{body}{foot}</div>'


# -- events --------------------------------------------------------------------------------


def event_html(event: Any) -> str:
    data = event.to_dict()
    kind = data["type"]
    body = "".join(
        pre_html(text) if label is None else f"<div>{escaped(label)}</div>{pre_html(text)}"
        for label, text in _parts(data)
    )
    if kind == "TaskStartEvent" and data["inputs"]:
        body += table_html(["input", "value"], data["inputs"].items())
    return panel_html(_title(data), body, _TINTS.get(kind, _GREY), _about(data))


def event_markdown(event: Any) -> str:
    data = event.to_dict()
    out = [f"**{inline(_title(data))}**"]
    for label, text in _parts(data):
        if label is not None:
            out.append(inline(label))
        out.append(fenced(text, "python" if label == "code" else "text"))
    if data["type"] == "TaskStartEvent" and data["inputs"]:
        out.append(table_markdown(["input", "value"], data["inputs"].items()))
    out.append(f"*{inline(_about(data))}*")
    return "\n\n".join(out) + "\n"


def _title(data: Mapping[str, Any]) -> str:
    kind = str(data["type"]).removesuffix("Event").lower()
    return f"{data['agent_name']} · step {data['step']} · {kind}"


def _about(data: Mapping[str, Any]) -> str:
    commit = data.get("commit")
    return f"session {data['session']} · {utc(data['timestamp'])} · commit {commit or '-'}"


_COMMON = {"type", "agent_name", "session", "step", "timestamp", "commit"}


def _parts(data: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """The event's own text, as (label or None, text) pieces shown in order."""
    kind = data["type"]
    if kind == "TaskStartEvent":
        return [("task", data["task_name"])]
    if kind == "ActionEvent":
        thought = [("thinking", data["thinking"])] if data["thinking"] else []
        return [*thought, ("code", data["code"])]
    if kind == "OutputEvent":
        return [(None, data["text"])]
    if kind == "ErrorEvent":
        return [(None, data["error"])]
    if kind == "SuccessEvent":
        result = data["result"]
        shown = result if isinstance(result, str) else json.dumps(result, indent=2)
        return [("result", shown)]
    if kind == "FailEvent":
        return [("failed", data["message"])]
    if kind == "ClarifyEvent":
        return [("needs clarification", data["message"])]
    if kind == "CancelledEvent":
        return [(None, "cancelled")]
    if kind == "ConflictEvent":
        return [(f"{data['action']} (attempt {data['attempt']})", data["message"])]
    return [(k, str(v)) for k, v in data.items() if k not in _COMMON]


# -- a session's history -------------------------------------------------------------------

HISTORY_COLUMNS = ("#", "commit", "time", "task", "step", "changes", "did")


def history_rows(commits: Iterable[CommitLike]) -> list[tuple[str, ...]]:
    """One row per commit: depth, id, time, task run, step, variables changed, and what
    its step did (the first line of its code; its error, if it raised)."""
    rows: list[tuple[str, ...]] = []
    for commit in commits:
        records = [e for e in commit.events if isinstance(e, Mapping)]
        steps = sorted({str(e["step"]) for e in records if "step" in e})
        changes = [
            name if entry is not None else f"-{name}" for name, entry in commit.changes.items()
        ]
        rows.append(
            (
                str(commit.depth),
                commit.id[:12] + ("" if commit.completed else " (unfinished)"),
                utc(commit.time),
                (commit.task or "-")[:12],
                ", ".join(steps) or "-",
                ", ".join(sorted(changes)) or "-",
                _did(records),
            )
        )
    return rows


def _did(records: list[Mapping[str, Any]]) -> str:
    for record in records:
        if "reverted_to" in record:
            return f"revert to {str(record['reverted_to'])[:12]}"
    for record in records:
        code = [line for line in str(record.get("code") or "").splitlines() if line.strip()]
        error = str(record.get("error") or "").strip().splitlines()
        if error:
            return f"{code[0] if code else ''}  -> {error[-1]}"
        if code:
            return code[0] + (f"  [+{len(code) - 1} lines]" if len(code) > 1 else "")
    return ""


def history_html(commits: Sequence[CommitLike]) -> str:
    if not commits:
        return panel_html("history", "<div>no commits</div>")
    return panel_html(
        f"history: {len(commits)} commits, newest first",
        table_html(HISTORY_COLUMNS, history_rows(commits)),
    )


def history_markdown(commits: Sequence[CommitLike]) -> str:
    if not commits:
        return "**history**: no commits\n"
    title = f"**history: {len(commits)} commits, newest first**"
    return f"{title}\n\n{table_markdown(HISTORY_COLUMNS, history_rows(commits))}\n"
