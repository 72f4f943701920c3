"""The gateway's uvicorn WebSocket protocol: read-ahead bound, frame order, coalesced writes.

A real uvicorn server on a free port runs a small ASGI app with ``GatewayWebSocketProtocol``;
a raw socket speaks WebSocket to it, so what is measured is what crossed the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from servers import free_port

from gateway.ws.transport import EXTENSION, READ_AHEAD_BYTES, GatewayWebSocketProtocol

FRAME_PAYLOAD = 16_384


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def _accepted(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    """Serve the lifespan (then None), or accept the WebSocket session and return what its
    scope offers as the transport extension."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return None
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    return scope["extensions"].get(EXTENSION)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` with the gateway's protocol on a free port; yields the port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws=GatewayWebSocketProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5)


class App:
    """Accepts one session, reads nothing until ``release`` is set, then reads every
    message and echoes the count; frames sent through the extension go out in one call."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.received: list[bytes] = []
        self.extension_seen = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        transport = await _accepted(scope, receive, send)
        if scope["type"] == "lifespan":
            return
        self.extension_seen = isinstance(transport, GatewayWebSocketProtocol)
        await self.release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.received.append(message["bytes"])
            if message["bytes"] == b"done":
                transport.send_frames([b"%d" % (len(self.received) - 1), b"bye"], binary=True)
                await asyncio.sleep(0.2)
                return


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, int]]:
    app = App()
    async with serving(app) as port:
        yield app, port
        app.release.set()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _binary_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        header = struct.pack("!BB", 0x82, 0x80 | len(payload))
    else:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, len(payload))
    return header + mask + masked


async def test_a_session_that_does_not_read_stops_the_socket_and_loses_nothing(
    served: tuple[App, int],
) -> None:
    app, port = served
    sock = await asyncio.to_thread(_connect, port)
    sock.setblocking(False)
    frames = [_binary_frame(i.to_bytes(4, "big") * (FRAME_PAYLOAD // 4)) for i in range(2_000)]
    data = b"".join(frames)  # 32 MiB of frames
    accepted = 0
    stalled_for = 0.0
    while accepted < len(data) and stalled_for < 1.0:
        try:
            accepted += sock.send(data[accepted : accepted + 65_536])
            stalled_for = 0.0
        except BlockingIOError:
            await asyncio.sleep(0.05)
            stalled_for += 0.05
    # The app reads nothing: past the read-ahead bound the server stops reading, so what
    # the client could push is that bound plus the kernel's socket buffers, not 32 MiB.
    assert app.received == []
    assert accepted < len(data)
    assert accepted < READ_AHEAD_BYTES + 16 * 1024 * 1024
    app.release.set()
    while accepted < len(data):
        try:
            accepted += sock.send(data[accepted : accepted + 65_536])
        except BlockingIOError:
            await asyncio.sleep(0.01)
    sock.setblocking(True)
    await asyncio.to_thread(sock.sendall, _binary_frame(b"done"))
    reply = b""
    sock.settimeout(5)
    while reply.count(b"bye") == 0:
        chunk = await asyncio.to_thread(sock.recv, 65_536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    # Every frame arrived, in order, once.
    numbers = [int.from_bytes(m[:4], "big") for m in app.received[:-1]]
    assert numbers == list(range(2_000))
    assert app.extension_seen
    # Both frames sent through the extension arrived whole and in order (unmasked binary).
    assert reply == b"\x82\x04" + b"2000" + b"\x82\x03bye"


class DirectApp:
    """On its first message, writes with ``send_now`` and ``send_frames`` and then blocks the
    event loop until the client says it has what ``send_now`` wrote (or 5 s pass)."""

    def __init__(self) -> None:
        self.client_has_it = threading.Event()
        self.answers: list[bool] = []
        self.seen_while_blocked = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        transport: GatewayWebSocketProtocol | None = await _accepted(scope, receive, send)
        if transport is None:
            return
        await receive()
        # More than the limit at once is refused, written to an idle socket or not.
        self.answers.append(transport.send_now([b"big" * 200, b"x"], binary=True, limit=600))
        self.answers.append(transport.send_now([b"now"], binary=True, limit=1_000))
        transport.send_frames([b"later" * 40], binary=True)  # 200 bytes wait for the pass
        # Behind what waits: refused past the limit, queued behind it (in order) under it.
        self.answers.append(transport.send_now([b"refused"], binary=True, limit=100))
        self.answers.append(transport.send_now([b"after", b"last"], binary=True, limit=1_000))
        # The event loop stops here: only a write made at once can reach the client.
        self.seen_while_blocked = self.client_has_it.wait(5)
        await receive()


async def test_send_now_writes_at_once_and_keeps_order_behind_pending_writes() -> None:
    app = DirectApp()

    def read_all(sock: socket.socket) -> bytes:
        sock.settimeout(10)
        sock.sendall(_binary_frame(b"go"))
        got = b""
        while b"\x82\x03now" not in got:
            got += sock.recv(65_536)
        app.client_has_it.set()
        while not got.endswith(b"\x82\x04last"):
            got += sock.recv(65_536)
        return got

    async with serving(app) as port:
        sock = await asyncio.to_thread(_connect, port)
        try:
            got = await asyncio.to_thread(read_all, sock)
        finally:
            sock.close()
    assert app.seen_while_blocked
    assert app.answers == [False, True, False, True]
    assert got == (
        b"\x82\x03now" + b"\x82\x7e\x00\xc8" + b"later" * 40 + b"\x82\x05after\x82\x04last"
    )
