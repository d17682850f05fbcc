"""The system message: the primer, what the agent can use, the task, and the rules."""

from __future__ import annotations

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
    capabilities = _capabilities(agent)
    if capabilities:
        parts.append("You can use:\n" + "\n".join(capabilities))
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


def _capabilities(agent: Agent) -> list[str]:
    out = []
    for name, obj in agent.policy.names.items():
        if isinstance(obj, type):
            rule = agent.policy.classes.get(agent.policy.real.get(obj, obj))
            real = rule.cls if rule is not None else obj  # a stand-in describes its class
            made = "" if rule is None or rule.constructable else " (not constructable)"
            out.append(f"- class {name}{_short(_sig(real), 200)}{made}: {_doc(real, indent='')}")
            for attr in sorted(dir(real)):
                if attr.startswith("_") or (rule is not None and not rule.allows(attr)):
                    continue
                member = inspect.getattr_static(real, attr)
                bound = not isinstance(member, staticmethod)  # self or cls comes first
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if callable(member):
                    out.append(f"    .{attr}{_sig(member, bound)}  {_doc(member, indent='')}")
        elif callable(obj):
            out.append(f"- {_signature(name, obj)}  {_doc(obj, indent='')}")
    for name in sorted(agent.policy.modules):
        out.append(f"- module {name} (import {name})")
    return out


def _signature(name: str, func: Any) -> str:
    return f"def {name}{_sig(func)}"


def _sig(obj: Any, bound: bool = False) -> str:
    """The signature the model should call with. For a partial, the arguments it already
    binds are left out, values included: they may be secrets."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    kept = list(signature.parameters.values())
    if isinstance(obj, functools.partial):
        kept = [p for p in kept if p.name not in obj.keywords]
    if bound and inspect.isfunction(obj):
        kept = kept[1:]
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
