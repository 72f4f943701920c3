"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

General-purpose clients spend more CPU per request than the gateway does, which would make
the generator the bottleneck; this one only writes a prepared request and reads the
response's status line, headers and ``Content-Length`` body.
"""

from __future__ import annotations

import asyncio
import time


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(
    host: str, port: int, raw: bytes, connections: int, requests: int
) -> tuple[list[float], float, int]:
    """Send ``requests`` copies of ``raw`` over ``connections``; (latencies, elapsed, errors)."""
    latencies: list[float] = []
    errors = 0
    per_connection = requests // connections
    conns = [await Connection.open(host, port) for _ in range(connections)]

    async def drive(conn: Connection) -> None:
        nonlocal errors
        for _ in range(per_connection):
            started = time.perf_counter()
            status, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(drive(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return latencies, elapsed, errors
