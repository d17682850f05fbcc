"""What the loop asks of a model: stream a reply to a conversation.

Providers (``scripted`` in core; ``openai``, ``anthropic`` and ``gemini`` through their
official SDKs, in ``agex.llm.sdk``) register through ``agex_register_llms``. A client keeps
its configuration (provider, model, options) so it can be sent to wherever the loop runs;
API keys are read there, from its environment (the provider's usual variable, or the one
named by ``key_env``), and never travel. The openai provider also talks to local
OpenAI-compatible servers (``base_url``), with no key if they need none.
"""

from __future__ import annotations

import os
import re
from typing import Any

from agex import plugins
from agex.protocols import LLM as LLM
from agex.protocols import Message as Message

PROVIDER_ENV = "AGEX_LLM_PROVIDER"
MODEL_ENV = "AGEX_LLM_MODEL"


def create(provider: str | None = None, model: str | None = None, **options: Any) -> LLM:
    """A model client from its provider; ``provider`` and ``model`` default to the
    environment variables AGEX_LLM_PROVIDER and AGEX_LLM_MODEL."""
    provider = provider or os.environ.get(PROVIDER_ENV)
    if not provider:
        installed = ", ".join(sorted(plugins.providers("llm"))) or "(none)"
        raise ValueError(
            f"connect_llm() needs a provider: pass provider=... or set {PROVIDER_ENV}. "
            f"Installed LLM providers: {installed}."
        )
    if not isinstance(provider, str):
        raise TypeError(f"provider must be a provider name (a string), got {provider!r}")
    model = model or os.environ.get(MODEL_ENV) or None
    llm: LLM = plugins.create("llm", provider, model=model, **options)
    return llm


_FENCE = re.compile(r"```(?:python|py)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def split_reply(reply: str) -> tuple[str, str | None]:
    """The reasoning before the first python block, and the block's code (None if none)."""
    found = _FENCE.search(reply)
    if found is None:
        return reply.strip(), None
    return reply[: found.start()].strip(), found.group(1).rstrip()
