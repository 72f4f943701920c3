"""A deliberately stalled WebSocket client: a raw socket with a tiny receive buffer that
handshakes, sends frames, and reads nothing until told to."""

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
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        self.sock.sendall(header + mask + masked)

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
