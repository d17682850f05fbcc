"""What the SDK-backed providers share: keys from the environment of wherever the loop runs,
one SDK client per event loop, and SDK errors turned into one clear LLMError."""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from agex.errors import LLMError

#: Options that would carry credentials inside the configuration.
SECRET_OPTIONS = frozenset(
    {"api_key", "auth_token", "admin_api_key", "default_headers", "http_client", "credentials"}
)
#: How providers' keys begin (OpenAI, Anthropic, Google, Groq, Hugging Face, xAI, ...).
_KEY_PREFIXES = ("sk-", "sk_", "AIza", "gsk_", "hf_", "xai-", "pplx-", "r8_")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_SEPARATORS = re.compile(r"[^A-Za-z0-9_.-]+")
KEY_ENV_SUFFIX = "_API_KEY"
#: Each built-in provider's own key variables, first set wins: what a server reads for a
#: model at the provider's default endpoint (it knows them before it builds the model).
KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
#: Built-in providers that can call a server needing no key without sending one.
KEYLESS = frozenset({"openai"})
#: Options (at any depth) whose mappings are sent as request headers or query parameters.
_SENT_MAPPINGS = re.compile(r"(headers|query|params)$", re.I)
#: Words of a header's or parameter's name that say it carries a credential.
_AUTH_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "auth",
        "authorization",
        "secret",
        "password",
        "cookie",
        "credential",
        "credentials",
        "signature",
        "sig",
    }
)
#: Shortest line of a key that is hidden from error messages on its own.
_SHORTEST_LINE = 4


def looks_like_key(text: str) -> bool:
    """Whether ``text`` holds what looks like an API key or a bearer token."""
    if text.lower().startswith("bearer "):
        return True
    words = _WORD_SEPARATORS.split(text)  # a key may sit in a URL's query: ?key=AIza...
    return any(len(word) >= 20 and word.startswith(_KEY_PREFIXES) for word in words)


def is_key_variable(name: object) -> bool:
    """Whether ``name`` may be given as ``key_env``: a variable's name ending in _API_KEY.
    A server reads the variable a client's agent names, so only its API keys may be named,
    never its other secrets (agex's own AGEX_ variables, cloud credentials)."""
    return (
        isinstance(name, str)
        and _VARIABLE.fullmatch(name) is not None
        and name.endswith(KEY_ENV_SUFFIX)
        and not name.startswith("AGEX_")
    )


def _auth_names(value: Any, sent: bool = False) -> Iterator[str]:
    """Names of header or query entries in ``value`` that look like credentials."""
    if isinstance(value, dict):
        for name, item in value.items():
            words = set(re.split(r"[^a-z0-9]+", str(name).lower()))
            if sent and words & _AUTH_WORDS:
                yield str(name)
            yield from _auth_names(item, _SENT_MAPPINGS.search(str(name)) is not None)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _auth_names(item, sent)


def url_credentials(url: object) -> str | None:
    """What in ``url`` could carry a credential (user info, a query), or None."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return "a user name or password"
    if parts.query or "?" in url:
        return "a query string"
    return None


def scrub(text: str, secrets: Iterator[str] | list[str]) -> str:
    """``text`` with each secret, and each line of it, replaced by ***."""
    for secret in secrets:
        for part in sorted({secret, *secret.splitlines()}, key=len, reverse=True):
            if len(part.strip()) >= _SHORTEST_LINE:
                text = text.replace(part, "***")
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)


class SDKClient:
    """Base of the openai, anthropic and gemini providers; subclasses set ``provider``,
    ``requires``, ``key_envs`` and ``default_model`` and implement ``_connect`` and
    ``stream``."""

    provider: str
    #: Distributions this client needs wherever the loop runs (a remote image installs them).
    requires: tuple[str, ...]
    #: Where the key is read from, first set wins, unless the caller names one (``key_env``).
    key_envs: tuple[str, ...]
    default_model: str
    #: No key at all is sent (see :meth:`send_key_of`).
    keyless = False

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        key_env: str | None = None,
        **options: Any,
    ) -> None:
        if key_env is not None and not is_key_variable(key_env):
            raise ValueError(  # without the value, which may be a key
                f"{self.provider}: key_env takes the name of the environment variable that holds "
                f'the key, ending in {KEY_ENV_SUFFIX} (like key_env="VLLM{KEY_ENV_SUFFIX}"), not '
                "the key; the key is read from that variable where the loop runs, so it never "
                "travels with the agent, and no other variable may be named, so that a server "
                "reads only its API keys"
            )
        self.key_env = key_env
        secret = sorted(SECRET_OPTIONS & options.keys())
        if isinstance(base_url, str) and looks_like_key(base_url):
            secret.append("base_url with a key in it")
        elif (carried := url_credentials(base_url)) is not None:
            secret.append(f"base_url with {carried} in it")  # it travels, and shows in errors
        secret += sorted(
            name
            for name, value in options.items()
            if name not in secret
            and (any(map(looks_like_key, _strings(value))) or any(_auth_names({name: value})))
        )
        if secret:
            raise ValueError(
                f"{self.provider}: do not pass {', '.join(secret)}; the key is read from "
                f"{self._key_names()} where the loop runs, so it never travels with the agent "
                '(to read it from another variable, name that variable: key_env="MY_API_KEY")'
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

    def _key_names(self) -> str:
        return self.key_env or " or ".join(self.key_envs)

    def send_key_of(self, variable: str | None) -> None:
        """Send the key in ``variable`` and no other (None: no key at all): how a server
        holds a model to what its operator allowed for an endpoint."""
        if variable is None and not self.keyless_servers:
            raise ValueError(
                f"{self.provider} always sends a key: a server lets it call an endpoint only "
                "with a key variable allowed there (--model-endpoint URL=KEY_VAR)"
            )
        self.key_env, self.keyless = variable, variable is None
        self._clients = weakref.WeakKeyDictionary()

    def key(self) -> str | None:
        """The key, from the environment of the process this runs in; None for a server of
        the caller's that needs none."""
        if self.keyless:
            return None
        for name in (self.key_env,) if self.key_env else self.key_envs:
            value = os.environ.get(name)
            if value:
                return value
        if self.keyless_servers and self.base_url and not self.key_env:
            return None
        raise LLMError(
            f"{self._key_names()} is not set where the loop runs; set it there (keys are "
            "read from the environment and never sent with the agent)"
        )

    @property
    def keyless_servers(self) -> bool:
        """A server of the caller's (``base_url``) may need no key, as local OpenAI-compatible
        servers do (the providers in ``KEYLESS``); without ``base_url`` a missing key is
        still an error."""
        return self.provider in KEYLESS

    def client(self) -> Any:
        """The SDK client for the running event loop (an SDK client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._connect(self.key())
        return client

    def _connect(self, key: str | None) -> Any:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        config = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            **self.options,
        }
        if self.key_env:
            config["key_env"] = self.key_env  # the variable's name; its value stays here
        return config

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
        # The SDK's text may quote the key (a header it refused, say): this error travels to
        # whoever ran the task, who may not hold the key.
        text = scrub(str(exc), self._keys_here())
        if code is not None:
            return LLMError(f"{self.provider} answered HTTP {code} {tries}: {text}")
        name = type(exc).__name__
        if "Timeout" in name:
            return LLMError(f"{self.provider} did not answer within {self.timeout:g}s {tries}")
        return LLMError(f"could not reach {where} {tries}: {name}: {text}")

    def _keys_here(self) -> list[str]:
        names = {*self.key_envs, *([self.key_env] if self.key_env else [])}
        return [value for name in names if (value := os.environ.get(name))]
