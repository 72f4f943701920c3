"""A lean WebSocket load generator on raw asyncio streams.

Client frames must be masked; a zero masking key leaves the payload unchanged, so frames are
prepared once as bytes and written as they are. Server frames are parsed with a few slices.
This keeps the generator's cost per frame well below the gateway's, so it measures the
gateway, not itself (compare with the bare ack server in ``bare_ack_server``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable, Iterable

import msgspec

_decoder = msgspec.json.Decoder()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65_536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\x00\x00\x00\x00" + payload


class WsConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> WsConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        writer.write(_handshake(host, port, path))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head[:200])
        return cls(reader, writer)

    def send(self, payload: bytes) -> None:
        self.writer.write(client_frame(payload))

    def send_many(self, payloads: Iterable[bytes]) -> None:
        self.writer.write(b"".join(client_frame(p) for p in payloads))

    async def recv(self) -> bytes:
        """The next text or binary message (pings are answered, closes raise)."""
        read = self.reader.readexactly
        while True:
            first, second = await read(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await read(8))
            payload = await read(length) if length else b""
            opcode = first & 0x0F
            if opcode in (0x1, 0x2):
                return payload
            if opcode == 0x8:
                raise ConnectionError(f"closed {payload[:2].hex()} {payload[2:]!r}")
            if opcode == 0x9:
                self.writer.write(client_frame(payload, 0xA))

    async def recv_json(self) -> dict:  # type: ignore[type-arg]
        frame: dict = _decoder.decode(await self.recv())  # type: ignore[type-arg]
        return frame

    def close(self) -> None:
        self.writer.close()


class FrameProtocol(asyncio.Protocol):
    """A WebSocket client connection as an asyncio protocol, for closed loops.

    ``WsConnection`` awaits each frame in turn and writes each reply with its own system
    call. Here the frames of one read are parsed together and handed to ``on_messages`` as
    a list, so that what a client sends in reaction to them goes out in one write, as a
    client reacting to a burst of replies would. That is a third of the CPU per reply,
    which leaves the server under test the core the generator would otherwise take.
    """

    def __init__(
        self,
        on_messages: Callable[[list[bytes]], None],
        on_lost: Callable[[Exception], None],
    ) -> None:
        self.on_messages = on_messages
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._closing = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        on_messages: Callable[[list[bytes]], None],
        on_lost: Callable[[Exception], None],
    ) -> FrameProtocol:
        """Connect and upgrade; then each read's messages go to ``on_messages``, and a close
        by the server (a close frame, or the connection lost) to ``on_lost``."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(on_messages, on_lost), host, port)
        assert protocol.transport is not None
        protocol.transport.write(_handshake(host, port, path))
        await protocol.upgraded
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self._lost(exc or ConnectionError("the server closed the connection"))

    def _lost(self, error: Exception) -> None:
        self._closing = True
        if not self.upgraded.done():
            self.upgraded.set_exception(error)
        else:
            self.on_lost(error)

    def send(self, payloads: Iterable[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(client_frame(p) for p in payloads))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._lost(ConnectionError(buffer[:200]))
                self.close()
                return
            self.upgraded.set_result(None)
            start = end + 4
        messages: list[bytes] = []
        size = len(buffer)
        while size - start >= 2:
            first, second = buffer[start], buffer[start + 1]
            length = second & 0x7F
            at = start + 2
            if length == 126:
                if size - at < 2:
                    break
                (length,) = _U16.unpack_from(buffer, at)
                at += 2
            elif length == 127:
                if size - at < 8:
                    break
                (length,) = _U64.unpack_from(buffer, at)
                at += 8
            if size - at < length:
                break
            payload = buffer[at : at + length]
            start = at + length
            opcode = first & 0x0F
            if opcode in (0x1, 0x2):
                messages.append(payload)
            elif opcode == 0x8 and not self._closing:
                self._lost(ConnectionError(f"closed {payload[:2].hex()} {payload[2:]!r}"))
            elif opcode == 0x9:
                self.send_control(payload, 0xA)
        self._buffer = buffer[start:]
        if messages:
            self.on_messages(messages)

    def send_control(self, payload: bytes, opcode: int) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, opcode))

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()


_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def _handshake(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: agentmem.v1.json\r\n\r\n"
    ).encode()
