"""What the SDK-backed providers share: keys from the environment of wherever the loop runs,
one SDK client per event loop, and SDK errors turned into one clear LLMError."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import Any

from agex.errors import LLMError

#: Options that would carry credentials inside the configuration.
SECRET_OPTIONS = frozenset(
    {"api_key", "auth_token", "admin_api_key", "default_headers", "http_client", "credentials"}
)


class SDKClient:
    """Base of the openai and anthropic providers; subclasses set ``provider``, ``key_env``,
    ``default_model`` and implement ``_connect`` and ``stream``."""

    provider: str
    #: Distributions this client needs wherever the loop runs (a remote image installs them).
    requires: tuple[str, ...]
    key_env: str
    default_model: str

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        **options: Any,
    ) -> None:
        secret = sorted(SECRET_OPTIONS & options.keys())
        if secret:
            raise ValueError(
                f"{self.provider}: do not pass {', '.join(secret)}; the key is read from "
                f"{self.key_env} where the loop runs, so it never travels with the agent"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be zero or more, got {max_retries!r}")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model = model or self.default_model
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.options = options
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def client(self) -> Any:
        """The SDK client for the running event loop (an SDK client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            key = os.environ.get(self.key_env)
            if not key:
                raise LLMError(
                    f"{self.key_env} is not set where the loop runs; set it there (keys are "
                    "read from the environment and never sent with the agent)"
                )
            client = self._clients[loop] = self._connect(key)
        return client

    def _connect(self, key: str) -> Any:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            **self.options,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_clients"] = None  # clients hold connections and the key: rebuilt where used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clients = weakref.WeakKeyDictionary()

    def explain(self, exc: Exception, status: Callable[[Exception], int | None]) -> LLMError:
        """One clear error for whatever the SDK raised, after its own retries."""
        code = status(exc)
        where = self.base_url or f"the {self.provider} API"
        tries = f"after {self.max_retries} retries" if self.max_retries else "(no retries)"
        if code is not None:
            return LLMError(f"{self.provider} answered HTTP {code} {tries}: {exc}")
        name = type(exc).__name__
        if "Timeout" in name:
            return LLMError(f"{self.provider} did not answer within {self.timeout:g}s {tries}")
        return LLMError(f"could not reach {where} {tries}: {exc}")
