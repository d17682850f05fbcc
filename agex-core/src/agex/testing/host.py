"""The contract every host meets: wherever the loop runs, a task call behaves as it does in
this process. Values come back with their types, outcomes raise their own exception types,
events and tokens reach the caller in order, and ``task.cancel(session)`` stops a run."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agex.agent import Agent
from agex.testing.provider import ProviderContract


@dataclasses.dataclass(frozen=True)
class Measured:
    """A value JSON cannot carry as itself: it must come back as this type."""

    name: str
    size: tuple[int, int]


def _initial() -> dict[str, Any]:
    """A session's initial variables, made where agent code runs."""
    return {"base": 40}


def scripted(*codes: str, **options: Any) -> Any:
    from agex import connect_llm

    replies = [f"Step {i}.\n```python\n{code}\n```" for i, code in enumerate(codes, 1)]
    return connect_llm("scripted", responses=replies, **options)


class HostContract(ProviderContract):
    kind: ClassVar[str] = "host"

    @pytest.fixture
    def host(self, tmp_path: Path) -> Any:
        """The host under test; override when it needs a running service."""
        return self.create(tmp_path)

    def state(self, tmp_path: Path) -> Any:
        """The state config the contract's agents use (None: ephemeral)."""
        return None

    def agent(self, host: Any, llm: Any, tmp_path: Path, **options: Any) -> Agent:
        return Agent(host=host, llm=llm, state=self.state(tmp_path), **options)

    def test_dump_config_is_plain_json_naming_the_provider(self, host: Any) -> None:
        config = host.dump_config()
        assert json.loads(json.dumps(config)) == config
        assert config["provider"] == self.provider

    def test_a_task_streams_events_and_tokens_and_returns_its_value(
        self, host: Any, tmp_path: Path
    ) -> None:
        llm = scripted("n = 40\nprint(n)", "task_success(n + x)")
        agent = self.agent(host, llm, tmp_path)
        events: list[Any] = []
        tokens: list[str] = []

        @agent.task
        def add(x: int) -> int:
            """Add x."""

        assert add(2, on_event=events.append, on_token=tokens.append) == 42
        kinds = [type(e).__name__ for e in events]
        assert kinds == [
            "TaskStartEvent",
            "ActionEvent",
            "OutputEvent",
            "ActionEvent",
            "SuccessEvent",
        ]
        assert [e.step for e in events] == [0, 1, 1, 2, 2]
        assert events[2].text == "40\n"
        assert "".join(tokens) == "".join(llm.responses)

    @pytest.mark.parametrize("task_kind", ["async", "sync"])
    def test_async_callbacks_are_awaited_in_order(
        self, host: Any, tmp_path: Path, task_kind: str
    ) -> None:
        """``async def`` callbacks get every event and token, awaited one at a time: each
        yields to the event loop, and the next is delivered only after it has finished."""
        import asyncio
        import gc
        import warnings

        llm = scripted("n = 40\nprint(n)", "task_success(n + x)", chunk_size=5)
        agent = self.agent(host, llm, tmp_path)
        seen: list[Any] = []
        busy: list[bool] = []

        async def on_event(event: Any) -> None:
            busy.append(True)
            await asyncio.sleep(0.001)
            seen.append(type(event).__name__)
            busy.pop()

        async def on_token(text: str) -> None:
            assert not busy, "a token arrived while an event's callback was running"
            await asyncio.sleep(0)
            seen.append(text)

        if task_kind == "async":

            @agent.task
            async def add(x: int) -> int:
                """Add x."""

            def call() -> Any:
                return asyncio.run(add(2, on_event=on_event, on_token=on_token))

        else:

            @agent.task
            def add(x: int) -> int:
                """Add x."""

            def call() -> Any:
                return add(2, on_event=on_event, on_token=on_token)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert call() == 42
            gc.collect()
        never = [w for w in caught if "never awaited" in str(w.message)]
        assert not never, never
        events = [s for s in seen if s.endswith("Event")]
        assert events == [
            "TaskStartEvent",
            "ActionEvent",
            "OutputEvent",
            "ActionEvent",
            "SuccessEvent",
        ]
        assert "".join(s for s in seen if not s.endswith("Event")) == "".join(llm.responses)
        # The model's reply streams before the action it becomes is reported.
        first_action = seen.index("ActionEvent")
        assert (
            "".join(s for s in seen[:first_action] if not s.endswith("Event")) == (llm.responses[0])
        )

    def test_setup_and_init_run_where_agent_code_runs(self, host: Any, tmp_path: Path) -> None:
        """A task's setup code and its session's initial variables reach the agent's code
        wherever the host runs it; setup's output is step 0."""
        import uuid

        from agex.connect import connect_state

        state = self.state(tmp_path) or connect_state(type="ephemeral")
        seeded = dataclasses.replace(state, init=_initial)
        agent = Agent(host=host, llm=scripted("task_success(base + x)"), state=seeded)
        events: list[Any] = []

        @agent.task(setup="print(base + 1)")
        def add(x: int) -> int:
            """Add x to base."""

        session = f"contract-{uuid.uuid4().hex[:8]}"
        assert add(2, session=session, on_event=events.append) == 42
        (output,) = [e for e in events if type(e).__name__ == "OutputEvent"]
        assert (output.step, output.text) == (0, "41\n")

    def test_values_keep_their_type(self, host: Any, tmp_path: Path) -> None:
        agent = self.agent(
            host,
            scripted("task_success(Measured('box', (2, 3)))", "task_success(None)"),
            tmp_path,
        )
        agent.cls(Measured)

        @agent.task
        def measure() -> Measured:
            """Measure."""

        @agent.task
        def nothing() -> None:
            """Nothing."""

        assert measure() == Measured("box", (2, 3))
        assert nothing() is None

    @pytest.mark.parametrize(
        ("code", "outcome"),
        [
            ("task_fail('no data')", "TaskFail"),
            ("task_clarify('which year?')", "TaskClarify"),
            ("while True:\n    pass", "TaskTimeout"),
        ],
    )
    def test_outcomes_raise_their_own_type(
        self, host: Any, tmp_path: Path, code: str, outcome: str
    ) -> None:
        from agex import errors

        agent = self.agent(host, scripted(code), tmp_path, timeout=1.0)

        @agent.task
        def job() -> int:
            """Job."""

        with pytest.raises(getattr(errors, outcome)) as caught:
            job()
        assert type(caught.value).__name__ == outcome
        said = {"TaskFail": "no data", "TaskClarify": "which year?"}
        if outcome in said:  # what agent code said, without decoration
            assert caught.value.message == said[outcome]
        else:
            assert caught.value.message

    def test_cancel_stops_a_running_task(self, host: Any, tmp_path: Path) -> None:
        from agex import TaskCancelled

        agent = self.agent(host, scripted("while True:\n    pass"), tmp_path)
        spinning = threading.Event()
        box: dict[str, Any] = {}

        @agent.task
        def spin() -> int:
            """Spin."""

        def on_event(event: Any) -> None:
            if type(event).__name__ == "ActionEvent":
                spinning.set()

        def work() -> None:
            try:
                box["value"] = spin(session="contract", on_event=on_event)
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        assert spinning.wait(30)
        time.sleep(0.1)
        assert spin.cancel("contract") == 1
        thread.join(30)
        assert isinstance(box.get("error"), TaskCancelled), box
        assert spin.cancel("contract") == 0
