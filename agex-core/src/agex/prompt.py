"""The system message: the primer, what the agent can use, the task, and the rules."""

from __future__ import annotations

import contextlib
import functools
import inspect
from types import ModuleType
from typing import Any

from agex.protocols import AgentLike as Agent
from agex.protocols import TaskLike as Task

RULES = """\
Rules:
- Reply with your reasoning, then exactly one ```python block. It runs as is; what it
  prints and any error come back to you.
- Variables you create stay defined for your next block.
- When you have the answer, call task_success(value) with a value of the return type.
- If the task cannot be done, call task_fail("why"); if you need more information, call
  task_clarify("question").
- Only what is listed above, a few safe builtins and these modules can be used: {modules}."""


def system_message(agent: Agent, task: Task) -> str:
    parts = [agent.primer.strip()] if agent.primer else []
    offered = capabilities(agent)
    if offered:
        parts.append("You can use:\n" + "\n".join(offered))
    primer = "\n".join("    " + line for line in task.primer.strip().splitlines())
    parts.append(f"Your task:\n{_signature(task.name, task.func)}\n{primer}")
    modules = ", ".join(agent.policy.importable_names())
    parts.append(RULES.format(modules=modules))
    return "\n\n".join(parts)


def task_message(task: Task, arguments: dict[str, Any], limit: int = 2000) -> str:
    if not arguments:
        return "The task takes no inputs. Begin."
    lines = [f"{name} = {_short(repr(value), limit)}" for name, value in arguments.items()]
    return "Inputs (already defined as variables):\n" + "\n".join(lines) + "\nBegin."


def capabilities(agent: Agent) -> list[str]:
    """What the system prompt tells the model it can use: one entry per registration (its
    members indented under it), as prominent as the registration's visibility says:
    ``"high"`` signatures and docstrings, ``"medium"`` signatures, ``"low"`` names."""
    policy = agent.policy
    out: list[str] = []
    for name, obj in policy.names.items():
        visibility, doc = _told(policy.descriptions, name)
        if name in policy.live:
            out.extend(_live(name, policy.live[name], visibility, doc))
        elif isinstance(obj, type):
            out.extend(_class(policy, name, obj, visibility, doc))
        elif callable(obj):
            out.append(_function(name, obj, visibility, doc))
    for name in sorted(policy.modules):
        visibility, doc = _told(policy.module_descriptions, name)
        out.extend(_module(policy, name, visibility, doc))
    return out


def _told(descriptions: Any, name: str) -> tuple[str, str | None]:
    """A registration's visibility and the docstring it was given instead of its own."""
    found = descriptions.get(name)
    return ("high", None) if found is None else (found.visibility, found.doc)


def _function(name: str, func: Any, visibility: str, doc: str | None) -> str:
    if visibility == "low":
        return f"- {name}(...)"
    line = f"- {_signature(name, func)}"
    if visibility == "medium":
        return line
    return _then(line, _text(doc) if doc is not None else _doc(func, indent=""))


def _class(policy: Any, name: str, cls: type, visibility: str, doc: str | None) -> list[str]:
    rule = policy.classes.get(policy.real.get(cls, cls))
    real = rule.cls if rule is not None else cls  # a stand-in describes its class
    made = "" if rule is None or rule.constructable else " (not constructable)"
    if visibility == "low":
        return [f"- class {name}{made}"]
    head = f"- class {name}{_short(_sig(real), 200)}{made}"
    text = _text(doc) if doc is not None else _doc(real, indent="")
    if visibility == "high" and text:
        head += ": " + text.replace("\n", "\n    ")
    out = [head]
    for attr in sorted(dir(real)):
        if attr.startswith("_") or (rule is not None and not rule.allows(attr)):
            continue
        member = inspect.getattr_static(real, attr)
        bound = not isinstance(member, staticmethod)  # self or cls comes first
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if callable(member):
            line = f"    .{attr}{_sig(member, bound)}"
            out.append(line if visibility == "medium" else _then(line, _doc(member, indent="")))
    return out


def _live(name: str, live: Any, visibility: str, doc: str | None) -> list[str]:
    head = f"- {name}: a live {live.kind} object"
    if visibility == "low":
        return [head]
    if visibility == "high" and doc is not None:
        head += f": {_text(doc)}"
    out = [head + "; call its methods:"]
    for attr, method in live.methods.items():
        line = f"    {name}.{attr}{_sig(method)}"
        out.append(line if visibility == "medium" else _then(line, _doc(method, indent="")))
    return out


def _module(policy: Any, name: str, visibility: str, doc: str | None) -> list[str]:
    head = f"- module {name} (import {name})"
    if visibility == "low":
        return [head]
    if visibility == "high":
        text = _text(doc) if doc is not None else _summary(policy.view(name))
        head += f": {text}" if text else ""
    out = [head]
    for attr, value in sorted(vars(policy.view(name)).items()):
        if attr.startswith("_") or isinstance(value, ModuleType):
            continue  # a registered submodule has a line of its own
        if isinstance(value, type) or callable(value):
            kind = "class " if isinstance(value, type) else ""
            line = f"    {kind}{name}.{attr}{_short(_sig(value), 200)}"
            out.append(_then(line, _summary(value)) if visibility == "high" else line)
        else:
            out.append(f"    {name}.{attr}: {type(value).__name__}")
    return out


def _then(line: str, doc: str) -> str:
    """A member's line and its docstring, the docstring's later lines indented under it."""
    first, *rest = (doc or "").splitlines() or [""]
    return "\n".join([f"{line}  {first}".rstrip(), *(f"        {r}".rstrip() for r in rest)])


def _summary(obj: Any) -> str:
    """The first line of ``obj``'s docstring."""
    doc = _doc(obj, indent="")
    return doc.splitlines()[0] if doc else ""


def _text(doc: str) -> str:
    return inspect.cleandoc(doc)


def _signature(name: str, func: Any) -> str:
    return f"def {name}{_sig(func)}"


def _sig(obj: Any, bound: bool = False) -> str:
    """The signature the model should call with. For a partial, the arguments it already
    binds are left out, values included: they may be secrets."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    task = getattr(obj, "__agex_task__", None)  # a sub-agent: its task's own function
    with contextlib.suppress(Exception):  # annotations written as strings, read as types
        signature = inspect.signature(obj if task is None else task.func, eval_str=True)
    kept = list(signature.parameters.values())
    if isinstance(obj, functools.partial):
        kept = [p for p in kept if p.name not in obj.keywords]
    if bound and inspect.isfunction(obj):
        kept = kept[1:]
    if isinstance(obj, type):  # calling a class gives an instance, whatever __init__ says
        signature = signature.replace(return_annotation=inspect.Signature.empty)
    return str(signature.replace(parameters=kept))


def _doc(obj: Any, indent: str = "    ") -> str:
    if isinstance(obj, functools.partial):
        obj = obj.func
    doc = inspect.getdoc(obj) if not isinstance(obj, ModuleType) else obj.__doc__
    if not doc:
        return ""
    return "\n".join(indent + line for line in doc.strip().splitlines())


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... [{len(text)} chars]"
