"""The child process's side: run the shipped task with agex's remote-execution core."""

import asyncio
import json
import os
import sys

from agex import remote


async def main() -> None:
    out = os.fdopen(os.dup(1), "w")  # messages only: whatever else prints goes to stderr
    os.dup2(2, 1)
    line, _, payload = sys.stdin.buffer.read().partition(b"\n")
    try:
        envelope = remote.Envelope.from_json(json.loads(line))
    except remote.Refused as refused:
        out.write(json.dumps(["error", remote.failure(refused)]) + "\n")
        return
    async for message in remote.stream(envelope, payload):
        out.write(json.dumps([message.kind, message.data]) + "\n")
        out.flush()


if __name__ == "__main__":
    asyncio.run(main())
