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
from collections.abc import Iterable

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
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: agentmem.v1.json\r\n\r\n"
            ).encode()
        )
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
