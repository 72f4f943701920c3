"""A deliberately stalled WebSocket client: a raw socket with a tiny receive buffer that
handshakes, sends frames (several in one segment if asked), and reads nothing until told
to."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any


class StalledClient:
    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, port))
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: agentmem.v1.json\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.sendall(self.encode(frame))

    def send_together(self, frames: list[dict[str, Any]]) -> None:
        """Every frame in one ``sendall``: the server reads them in one segment."""
        self.sock.sendall(b"".join(map(self.encode, frames)))

    def read_frames(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The next ``count`` text frames, decoded; a close frame ends the list as
        ``{"close": code}`` (fewer frames if the server closes or ``timeout`` passes)."""
        self.sock.settimeout(timeout)
        frames: list[dict[str, Any]] = []
        try:
            while len(frames) < count:
                head = self._exactly(2)
                if head is None:
                    break
                length = head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", self._exactly(2) or b"\0\0")
                elif length == 127:
                    (length,) = struct.unpack("!Q", self._exactly(8) or bytes(8))
                payload = self._exactly(length) or b""
                opcode = head[0] & 0x0F
                if opcode == 0x1:
                    frames.append(json.loads(payload))
                elif opcode == 0x8:
                    frames.append({"close": struct.unpack("!H", payload[:2])[0]})
                    break
        except TimeoutError:
            pass
        return frames

    def _exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    @staticmethod
    def encode(frame: dict[str, Any]) -> bytes:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        return header + mask + masked

    def read_all_frames(self, timeout: float) -> list[tuple[int, bytes]]:
        """Read until the server closes the TCP connection; every (opcode, payload)."""
        self.sock.settimeout(timeout)
        data = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        frames, pos = [], 0
        while pos + 2 <= len(data):
            opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
            pos += 2
            if length == 126:
                (length,) = struct.unpack_from("!H", data, pos)
                pos += 2
            elif length == 127:
                (length,) = struct.unpack_from("!Q", data, pos)
                pos += 8
            frames.append((opcode, bytes(data[pos : pos + length])))
            pos += length
        return frames

    def close(self) -> None:
        self.sock.close()
