"""Receiver processes for fan-out benchmarks: many WebSocket connections that count frames.

A Python receiver built on ``asyncio.StreamReader`` and a JSON decoder spends a core at
around 40,000-50,000 frames/s, which is below what fan-out can deliver. These receivers
are ``asyncio.Protocol`` objects that split the byte stream into frames with a few index
operations and read one number, the publisher's send time (``"t":<seconds>``), without
decoding the frame. Connections are spread over several processes (``Receivers``); each
reports its own CPU use, so a saturated receiver is visible beside the figure it produced.

A frame that carries no ``"t":`` (welcome, subscribed, errors) is kept for the setup
code; every frame with one counts as a delivery.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import multiprocessing.connection
import os
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any

_STAMP = b'"t":'


class _Tally:
    def __init__(self) -> None:
        self.counting = False
        self.delivered = 0
        self.last = 0.0
        self.latencies = array("d")


class _Receiver(asyncio.Protocol):
    def __init__(self, host: str, port: int, path: str, tally: _Tally) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: agentmem.v1.json\r\n\r\n"
        ).encode()
        self.tally = tally
        self.buffer = b""
        self.upgraded = False
        self.inbox: deque[bytes] = deque()
        self.arrived = asyncio.Event()
        self.lost: BaseException | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("the server closed the connection")
        self.arrived.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.lost = ConnectionError(f"upgrade refused: {buf[:300]!r}")
                self.arrived.set()
                return
            self.upgraded = True
            self.arrived.set()
            pos = end + 4
        size = len(buf)
        tally = self.tally
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            stamp = buf.find(_STAMP, start, end) if opcode <= 2 else -1
            if stamp >= 0:
                if tally.counting:
                    tally.delivered += 1
                    close = buf.find(b"}", stamp, end)
                    tally.last = now = time.time()
                    tally.latencies.append(now - float(buf[stamp + 4 : close]))
            elif opcode == 0x9 and self.transport is not None:  # ping: answer, masked
                payload = buf[start:end]
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                self.lost = ConnectionError(f"closed by the server: {buf[start:end]!r}")
                self.arrived.set()
            else:
                self.inbox.append(buf[start:end])
                self.arrived.set()
            pos = end
        self.buffer = buf[pos:]

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        length = len(payload)
        if length < 126:
            head = bytes((0x81, 0x80 | length))
        else:
            head = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
        self.transport.write(head + b"\0\0\0\0" + payload)

    async def next_message(self, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            if self.lost is not None:
                raise self.lost
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
        return self.inbox.popleft()

    async def upgrade(self) -> None:
        while not self.upgraded:
            if self.lost is not None:
                raise self.lost
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 20)


@dataclass(frozen=True)
class Plan:
    """What one receiver process does: connect, optionally await ``welcome``, subscribe."""

    host: str
    port: int
    paths: list[str]
    subscribe: bytes
    welcome: bool


async def _open(plan: Plan, path: str, tally: _Tally) -> _Receiver:
    loop = asyncio.get_running_loop()
    _, receiver = await loop.create_connection(
        lambda: _Receiver(plan.host, plan.port, path, tally), plan.host, plan.port
    )
    await receiver.upgrade()
    if plan.welcome:
        first = await receiver.next_message()
        if b'"welcome"' not in first:
            raise ConnectionError(f"expected welcome, got {first[:300]!r}")
    receiver.send(plan.subscribe)
    answer = await receiver.next_message()
    if b'"subscribed"' not in answer:
        raise ConnectionError(f"expected subscribed, got {answer[:300]!r}")
    return receiver


async def _serve(plan: Plan, pipe: multiprocessing.connection.Connection) -> None:
    tally = _Tally()
    receivers: list[_Receiver] = []
    for start in range(0, len(plan.paths), 100):
        receivers += await asyncio.gather(
            *(_open(plan, path, tally) for path in plan.paths[start : start + 100])
        )
    pipe.send(("ready", len(receivers)))
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    cpu = wall = 0.0

    def command() -> None:
        nonlocal cpu, wall
        what = pipe.recv()
        if what == "start":
            tally.delivered = 0
            tally.latencies = array("d")
            tally.counting = True
            cpu, wall = time.process_time(), time.perf_counter()
        elif what == "count":
            lost = sum(1 for r in receivers if r.lost is not None)
            pipe.send(("count", tally.delivered, lost))
        elif what == "stop":
            tally.counting = False
            elapsed = time.perf_counter() - wall
            pipe.send(
                (
                    "result",
                    {
                        "delivered": tally.delivered,
                        "last": tally.last,
                        "latencies": tally.latencies.tobytes(),
                        "cpu_cores": (time.process_time() - cpu) / elapsed if elapsed else 0.0,
                    },
                )
            )
            if not done.done():
                done.set_result(None)

    loop.add_reader(pipe.fileno(), command)
    await done
    loop.remove_reader(pipe.fileno())
    for receiver in receivers:
        if receiver.transport is not None:
            receiver.transport.close()


def _process_main(plan: Plan, pipe: multiprocessing.connection.Connection) -> None:
    try:
        asyncio.run(_serve(plan, pipe))
    except BaseException as exc:  # the parent reports it; a traceback here would be lost
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


class Receivers:
    """``len(paths)`` subscribed connections spread over ``processes`` receiver processes."""

    def __init__(
        self,
        host: str,
        port: int,
        paths: list[str],
        subscribe: bytes,
        welcome: bool,
        processes: int,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        processes = max(1, min(processes, len(paths)))
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for n in range(processes):
            mine, theirs = context.Pipe()
            plan = Plan(host, port, paths[n::processes], subscribe, welcome)
            proc = context.Process(target=_process_main, args=(plan, theirs), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)
        for pipe in self.pipes:
            self._expect(pipe, "ready", timeout=120)

    def _expect(
        self, pipe: multiprocessing.connection.Connection, kind: str, timeout: float = 30
    ) -> tuple[Any, ...]:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a receiver process gave no {kind!r} within {timeout:g} s")
        try:
            answer: tuple[Any, ...] = pipe.recv()
        except EOFError:
            raise RuntimeError(
                f"a receiver process exited before its {kind!r} answer (see its stderr above)"
            ) from None
        if answer[0] == "error":
            raise RuntimeError(f"a receiver process failed: {answer[1]}")
        if answer[0] != kind:
            raise RuntimeError(f"a receiver process answered {answer!r}, expected {kind!r}")
        return answer

    def start(self) -> None:
        for pipe in self.pipes:
            pipe.send("start")

    def count(self) -> tuple[int, int]:
        """(deliveries so far, connections lost)."""
        delivered = lost = 0
        for pipe in self.pipes:
            pipe.send("count")
        for pipe in self.pipes:
            _, some, gone = self._expect(pipe, "count")
            delivered += some
            lost += gone
        return delivered, lost

    def stop(self) -> tuple[int, float, array[float], list[float]]:
        """(deliveries, time.time() of the last one, every latency in seconds, each process's
        CPU in cores)."""
        for pipe in self.pipes:
            pipe.send("stop")
        delivered = 0
        last = 0.0
        latencies: array[float] = array("d")
        cpu: list[float] = []
        for pipe in self.pipes:
            _, result = self._expect(pipe, "result")
            delivered += result["delivered"]
            last = max(last, result["last"])
            latencies.frombytes(result["latencies"])
            cpu.append(result["cpu_cores"])
        self.close()
        return delivered, last, latencies, cpu

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
