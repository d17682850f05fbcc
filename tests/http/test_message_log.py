"""A run's messages on the server: numbered, batched, bounded, kept alive, as SSE."""

from __future__ import annotations

import asyncio
import json

from agex_host_http.server.runs import Run


def parse(chunk: bytes) -> list[tuple[str, str, str]]:
    """(id, event, data) of each SSE message; comments as ("", "comment", text)."""
    messages = []
    for block in chunk.decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            messages.append(("", "comment", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        messages.append((fields["id"], fields["event"], fields["data"]))
    return messages


async def collect(run: Run, after: int = 0, limit: int = 100) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    async for chunk in run.follow(after, detach_grace=60):
        out += parse(chunk)
        if len(out) >= limit:
            break
    return out


def test_tokens_nobody_was_sent_yet_travel_as_one_message() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=100, keepalive=10)
        for text in ["he", "llo"]:
            run.outbox.write_token(text)
        run.outbox.publish("event", '{"type": "X"}')
        run.outbox.write_token("!")
        run.outbox.finish({"kind": "result", "json": 1})
        return await collect(run)

    assert asyncio.run(main()) == [
        ("1", "tokens", '["he","llo"]'),
        ("2", "event", '{"type": "X"}'),
        ("3", "tokens", '["!"]'),
        ("4", "result", '{"kind": "result", "json": 1}'),
    ]


def test_following_from_an_id_gives_only_what_came_after() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=100, keepalive=10)
        for i in range(5):
            run.outbox.publish("event", str(i))
        run.outbox.finish({"kind": "result", "json": None})
        return await collect(run, after=3)

    assert [m[0] for m in asyncio.run(main())] == ["4", "5", "6"]


def test_a_quiet_run_sends_keepalive_comments() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=100, keepalive=0.05)
        return await asyncio.wait_for(collect(run, limit=3), 5)

    assert asyncio.run(main()) == [("", "comment", "keep-alive")] * 3


def test_a_follower_that_fell_too_far_behind_is_told_so() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=10, keepalive=10)
        for i in range(50):
            run.outbox.publish("event", str(i))
        run.outbox.finish({"kind": "result", "json": None})
        late = await collect(run, after=2)
        recent = await collect(run, after=45)
        return late, recent, len(run.outbox._log)

    late, recent, kept = asyncio.run(main())
    assert late[-1][1] == "error"
    assert json.loads(late[-1][2])["type"] == "EventsLost"
    assert [m[0] for m in recent] == ["46", "47", "48", "49", "50", "51"]
    assert kept <= 20  # bounded


def test_waiting_followers_wake_when_a_message_arrives() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=100, keepalive=10)
        followers = [asyncio.create_task(collect(run)) for _ in range(3)]
        await asyncio.sleep(0.05)
        run.outbox.publish("event", "1")
        run.outbox.finish({"kind": "result", "json": 2})
        return await asyncio.wait_for(asyncio.gather(*followers), 5)

    for messages in asyncio.run(main()):
        assert [m[1] for m in messages] == ["event", "result"]


def test_a_burst_of_tokens_never_overflows_the_log() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=10, keepalive=10)
        for i in range(100_000):
            run.outbox.write_token(str(i % 10))
        run.outbox.finish({"kind": "result", "json": 1})
        return await collect(run), len(run.outbox._log)

    messages, kept = asyncio.run(main())
    assert kept == 2
    assert "".join(json.loads(messages[0][2])) == "0123456789" * 10_000
    assert messages[-1][1] == "result"


def test_tokens_already_sent_are_never_changed() -> None:
    async def main():
        run = Run("r" * 8, "a", "s", limit=100, keepalive=10)
        run.outbox.write_token("a")
        first = await anext(run.follow(0, detach_grace=60))
        run.outbox.write_token("b")  # after "a" went out: a message of its own
        run.outbox.finish({"kind": "result", "json": 1})
        return parse(first), await collect(run, after=1)

    first, rest = asyncio.run(main())
    assert first == [("1", "tokens", '["a"]')]
    assert rest == [("2", "tokens", '["b"]'), ("3", "result", '{"kind": "result", "json": 1}')]


def test_a_run_cancelled_before_its_first_step_still_ends_its_stream() -> None:
    from agex_host_http.server.runs import RunBoard

    async def main():
        board = RunBoard(limit=100, retention=0.01)
        run = board.open("r" * 8, "a", "s")

        async def never_runs() -> None:
            run.outbox.finish({"kind": "result", "json": 1})

        board.watch(run, asyncio.create_task(never_runs()))
        assert run.cancel()  # before the task's first step: none of its code runs
        messages = await asyncio.wait_for(collect(run), 5)
        await asyncio.sleep(0.05)
        return messages, board.runs

    messages, left = asyncio.run(main())
    assert messages[-1][1] == "error"
    assert json.loads(messages[-1][2])["type"] == "TaskCancelled"
    assert left == {}  # forgotten after the retention period
