"""Messages between a worker process and its supervisor, over a Unix socket: a JSON header
and raw byte blobs (serialized values), never a pickle.

The supervisor holds secrets and reads what a possibly escaped worker writes, so a frame is
bounded before it is read, its header is plain JSON, and the blobs are only ever stored or
handed to another worker, not loaded.

A frame: its length (8 bytes), the header's length (4 bytes), the header (JSON, with
``"blobs"``: the blobs' lengths), then the blobs one after another.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Sequence
from typing import Any

_FRAME = struct.Struct("!QI")
#: Largest frame read from a worker: what one step may hand back (its changed variables).
#: The supervisor holds a frame about three times over while it stores it.
MAX_FRAME = 256 << 20
MAX_HEADER = 16 << 20

Frame = tuple[dict[str, Any], list[bytes]]


class ChannelClosed(ConnectionError):
    """The other side went away (a worker that exited, or a supervisor that did)."""


class BadFrame(ValueError):
    """A frame that breaks the format or its bounds."""


def encode(
    header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()
) -> list[bytes | memoryview]:
    """The pieces of one frame, ready to send."""
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    total = len(head) + sum(len(b) for b in blobs)
    return [_FRAME.pack(total, len(head)), head, *blobs]


def decode(body: bytes | bytearray | memoryview, head_size: int) -> Frame:
    header, views = _split(memoryview(body), head_size)
    return header, [bytes(view) for view in views]


def _split(view: memoryview, head_size: int) -> tuple[dict[str, Any], list[memoryview]]:
    """A frame's header, and its blobs as views of its body."""
    try:
        header = json.loads(bytes(view[:head_size]))
    except (ValueError, RecursionError):
        raise BadFrame("a frame's header is not JSON") from None
    sizes = header.pop("blobs", None) if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes):
        raise BadFrame("a frame's header does not say what it carries")
    if head_size + sum(sizes) != len(view):
        raise BadFrame("a frame's blobs do not add up to its length")
    blobs, at = [], head_size
    for size in sizes:
        blobs.append(view[at : at + size])
        at += size
    return header, blobs


def _sizes(prefix: bytes | bytearray, limit: int) -> tuple[int, int]:
    total, head = _FRAME.unpack(prefix)
    if total > limit:
        raise BadFrame(f"a frame of {total} bytes is over the limit of {limit}")
    if head > min(total, MAX_HEADER):
        raise BadFrame(f"a frame's header of {head} bytes is over the limit of {MAX_HEADER}")
    return total, head


# -- blocking (the worker's side) -------------------------------------------------------


def send(
    sock: socket.socket, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()
) -> None:
    pieces = encode(header, blobs)
    if sum(len(b) for b in blobs) < 1 << 20:  # one write: one wake-up of the other side
        pieces = [b"".join(pieces)]
    for piece in pieces:
        sock.sendall(piece)


def take(sock: socket.socket) -> tuple[dict[str, Any], list[memoryview]]:
    """The next frame from the supervisor, which a worker trusts: read into one buffer of
    its size, its blobs handed out as views of it (a large value is not copied on its way
    to the unpickler)."""
    total, head = _sizes(_exactly(sock, _FRAME.size, None), 1 << 40)
    body = memoryview(bytearray(total))
    got = 0
    while got < total:
        n = sock.recv_into(body[got:])
        if n == 0:
            raise ChannelClosed("the other side closed the channel")
        got += n
    return _split(body, head)


def recv(sock: socket.socket, limit: int = MAX_FRAME, deadline: float | None = None) -> Frame:
    """The next frame; past ``deadline`` (a monotonic time) TimeoutError, however slowly
    its bytes come."""
    total, head = _sizes(_exactly(sock, _FRAME.size, deadline), limit)
    return decode(_exactly(sock, total, deadline), head)


def _exactly(sock: socket.socket, size: int, deadline: float | None) -> bytearray:
    """``size`` bytes, the buffer growing as they arrive (see :func:`_aexactly`)."""
    import time

    piece = bytearray(min(size, 1 << 20))
    view = memoryview(piece)
    buffer = bytearray()
    while len(buffer) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the other side took too long")
            sock.settimeout(left)
        n = sock.recv_into(view[: size - len(buffer)])
        if n == 0:
            raise ChannelClosed("the other side closed the channel")
        if n == size:
            return piece
        buffer += view[:n]
    return buffer


# -- asyncio (the supervisor's side) ----------------------------------------------------


async def asend(
    sock: socket.socket, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()
) -> None:
    loop = asyncio.get_running_loop()
    pieces = encode(header, blobs)
    if sum(len(b) for b in blobs) < 1 << 20:  # one write: one wake-up of the other side
        pieces = [b"".join(pieces)]
    for piece in pieces:
        await loop.sock_sendall(sock, piece)


async def arecv(sock: socket.socket, limit: int = MAX_FRAME) -> Frame:
    total, head = _sizes(await _aexactly(sock, _FRAME.size), limit)
    return decode(await _aexactly(sock, total), head)


async def _aexactly(sock: socket.socket, size: int) -> bytearray:
    """``size`` bytes, the buffer growing as they arrive: a frame that only says it is large
    costs nothing until its bytes come."""
    loop = asyncio.get_running_loop()
    piece = bytearray(min(size, 1 << 20))
    view = memoryview(piece)
    buffer = bytearray()
    while len(buffer) < size:
        n = await loop.sock_recv_into(sock, view[: size - len(buffer)])
        if n == 0:
            raise ChannelClosed("the other side closed the channel")
        if n == size:
            return piece  # all at once: no copy
        buffer += view[:n]
    return buffer
