"""How a place that runs loops (this process, a server, a container) isolates agent code:
the weakest level it accepts, the limits of its workers, and where it sends what a client
declared (sub-agents, models)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agex.isolation import LEVELS, check, stronger
from agex.isolation.pool import Spec
from agex.remote.envelope import Refused

#: A worker's memory limit when neither the agent nor the host sets one.
MEMORY_MB = 2048
#: The environment variable a server also reads its model endpoints from, comma separated.
ENDPOINTS_ENV = "AGEX_MODEL_ENDPOINTS"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_START_WITH = "--model-endpoint URL[=KEY_VAR]"
#: What a client's model may say on a gated place, beside its provider's own settings: which
#: model, and where (checked against the endpoints), and how long to wait and retry.
_ROUTED = frozenset({"provider", "model", "base_url", "key_env", "timeout", "max_retries"})
#: Request-body settings of the openai, anthropic and gemini APIs that shape the reply only.
#: Any other option may route requests (gemini's http_options, a proxy, another provider's
#: api_base), add headers, or reach the operator's account (stored replies, cached content,
#: tools that fetch), so it is refused: an allow-list, so that an unknown option is too.
GENERATION_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_output_tokens",
        "max_completion_tokens",
        "stop",
        "stop_sequences",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "reasoning_effort",
        "thinking",
        "thinking_config",
        "candidate_count",
        "logit_bias",
    }
)
#: All the scripted provider takes: it calls nothing.
_SCRIPTED = frozenset({"provider", "model", "responses", "delay", "chunk_size", "position"})


@dataclass(frozen=True)
class Endpoint:
    """A model endpoint an operator allowed, and the one variable whose value may be sent
    there (None: no key is sent, for a server that needs none)."""

    url: str
    key_env: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Endpoint:
        """``URL`` or ``URL=KEY_VAR``; ValueError saying what is wrong."""
        from agex.llm.sdk import url_credentials

        url, _, variable = spec.strip().partition("=")
        url = url.strip().rstrip("/")
        # Messages name the address only: what was given after it may be a key by mistake.
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"a model endpoint is an http(s) URL, then =KEY_VAR if a key is sent there; "
                f"got {shown if parts.netloc else 'no URL'}"
            )
        carried = url_credentials(url)
        if carried is not None:
            raise ValueError(
                f"the model endpoint {shown!r} holds {carried}: give the address alone, and "
                "the key's variable after it (URL=KEY_VAR)"
            )
        variable = variable.strip()
        if variable and (not _VARIABLE.fullmatch(variable) or variable.startswith("AGEX_")):
            raise ValueError(
                f"what follows {shown!r} must name the environment variable holding the key "
                "sent there (not the key, and none of agex's own AGEX_ variables)"
            )
        return cls(url, variable or None)


@dataclass(frozen=True)
class Isolation:
    #: The weakest level this place runs agent code at; an agent may ask for more.
    level: str = "none"
    #: Workers' memory limit, and the most an agent may ask for.
    memory_mb: int = MEMORY_MB
    #: CPU seconds a worker may use (None: no limit but the run's time limit).
    cpu_seconds: int | None = None
    #: Loosened layers: network for the workers, and paths they may read.
    network: bool = False
    readable: tuple[str, ...] = ()
    #: Paths workers must never read (a server's state directory, its token file).
    hidden: tuple[str, ...] = ()
    #: Other agex servers (URLs) that sub-agents a client declared may be sent to; this
    #: place's own token for them, if any, goes nowhere else.
    remotes: tuple[str, ...] = ()
    #: Host providers that sub-agents a client declared may be sent to, whatever their
    #: options: the cluster this place runs on (a Ray runner sends them to its own cluster).
    hosts: tuple[str, ...] = ()
    #: Endpoints beside the providers' defaults that models a client declared may be
    #: called at (None: not gated, as in this process or the caller's own container; a
    #: server running loops for clients sets a tuple).
    endpoints: tuple[Endpoint, ...] | None = None

    def model(self, config: dict[str, Any] | None, where: str = "this host") -> Endpoint | None:
        """Refuse a model configuration a client declared that would send this place's
        keys, or its requests, where its operator did not allow; the allowed endpoint it
        names, whose key variable alone it may send (None: a provider's default endpoint,
        with the provider's own key variables, or nothing is gated here)."""
        if self.endpoints is None or config is None:
            return None
        from agex.llm.sdk import KEY_VARIABLES, KEYLESS

        provider = config.get("provider")
        self._options(config, provider, where)
        base_url, key_env = config.get("base_url"), config.get("key_env")
        if base_url is None:
            own = KEY_VARIABLES.get(str(provider), ())
            if key_env is None or key_env in own:
                return None
            raise Refused(
                403,
                f"{where} sends to {str(provider)[:100]}'s default endpoint only its own key "
                f"({' or '.join(own) or 'none'}), not {str(key_env)[:100]!r}: leave key_env "
                f"unset, or have the server started with {_START_WITH} for the endpoint that "
                "key is for",
            )
        url = str(base_url).rstrip("/")
        found = next((e for e in self.endpoints if e.url == url), None)
        if found is None:
            raise Refused(
                403,
                f"{where} calls models only at their providers' default endpoints and at those "
                f"it was started with ({_START_WITH}, or {ENDPOINTS_ENV}), not at "
                f"{url[:200]!r}: leave base_url unset, or have the server started with it",
            )
        if key_env is not None and key_env != found.key_env:
            allowed = repr(found.key_env) if found.key_env else "no key"
            raise Refused(
                403,
                f"{where} sends {allowed} to {url[:200]!r}, not {str(key_env)[:100]!r}: leave "
                f"key_env unset there, or have the server started with {_START_WITH}",
            )
        if found.key_env is None and provider in KEY_VARIABLES and provider not in KEYLESS:
            raise Refused(
                403,
                f"{where} sends no key to {url[:200]!r}, and {provider!r} needs one: have the "
                f"server started with {_START_WITH} naming the key's variable",
            )
        return found

    @staticmethod
    def _options(config: dict[str, Any], provider: object, where: str) -> None:
        """Refuse an option of a client's model that could change where or how its requests
        go: only the routing options checked here and known generation settings pass."""
        allowed = _SCRIPTED if provider == "scripted" else _ROUTED | GENERATION_OPTIONS
        other = sorted(str(name)[:100] for name in config if name not in allowed)
        if other:
            raise Refused(
                403,
                f"{where} takes from a client's model only the options "
                f"{', '.join(sorted(allowed - {'provider'}))}; not {', '.join(other[:5])}: "
                "leave them unset (other options may change where or how requests go, and "
                "the keys held here would go with them)",
            )

    def models(self, declared: Any, where: str = "this host") -> None:
        """Refuse an envelope (or a declared sub-agent) whose model, or the model of a
        sub-agent it declares that runs here, :meth:`model` refuses."""
        self.model(declared.llm, where)
        for delegate in declared.delegates.values():
            if delegate.host.get("provider") == "local":
                self.models(delegate, where)

    def hold(self, llm: Any, endpoint: Endpoint | None, where: str = "this host") -> None:
        """Hold a model built for an allowed ``endpoint`` to the key variable allowed there."""
        if endpoint is None:
            return
        send_key_of = getattr(llm, "send_key_of", None)
        if send_key_of is None:
            raise Refused(
                403,
                f"{where} cannot hold provider {type(llm).__name__} to the key allowed at "
                f"{endpoint.url!r}: leave its base_url unset",
            )
        try:
            send_key_of(endpoint.key_env)
        except ValueError as exc:
            raise Refused(403, f"{where}: {exc}") from None

    def remote(self, host: dict[str, object], where: str = "this host") -> None:
        """Refuse a declared sub-agent host this place may not send runs to."""
        if host.get("provider") in self.hosts:
            return
        url = host.get("url")
        allowed = {remote.rstrip("/") for remote in self.remotes}
        if host.get("provider") == "http" and isinstance(url, str) and url.rstrip("/") in allowed:
            return
        raise Refused(
            403,
            f"{where} sends sub-agents only to the agex servers it was started with "
            f"(--remote URL), not to {host.get('provider')!r} at {str(url)[:200]!r}",
        )

    def spec(
        self, asked: str | None, memory_mb: int | None, where: str = "this host"
    ) -> Spec | None:
        """The worker for an agent that asks for ``asked`` isolation (None: ours) and
        ``memory_mb``; None to run it in this process. :class:`Refused` when it asks for
        less than we accept, or more than we have."""
        if asked is not None and LEVELS.index(asked) < LEVELS.index(self.level):
            raise Refused(
                403,
                f"{where} runs agent code at isolation {self.level!r} or stronger, and the "
                f"agent asks for {asked!r}: leave isolation unset, or ask for {self.level!r}",
            )
        level = stronger(asked or self.level, self.level)
        try:
            check(level)
        except ValueError as exc:
            raise Refused(400, f"{where}: {exc}") from None
        if memory_mb is not None and memory_mb > self.memory_mb:
            raise Refused(
                403,
                f"the agent asks for {memory_mb} MB of memory and {where} allows at most "
                f"{self.memory_mb}: ask for less",
            )
        if level == "none":
            return None
        return Spec(
            level=level,
            memory_mb=memory_mb or self.memory_mb,
            cpu_seconds=self.cpu_seconds,
            network=self.network,
            readable=self.readable,
            hidden=self.hidden,
        )


#: This process: agent code runs here unless its agent asks for a worker.
LOCAL = Isolation()
