"""WebSocket benchmarks of the gateway, each beside the bare ack server in the same run.

    python -m loadtest.bench.ws_gateway [--duration 4] [--out loadtest/results/ws.json]
        [--target URL] [--skip-fanout] [--pairs 3] [--subscribers 100,1000] [--deliveries 40000]

Without ``--target`` it starts a gateway (memory pipeline off) on a free port; with
``--target http://127.0.0.1:8080`` it measures that running gateway (``make run``), see
``loadtest.bench.target``. The bare servers always run here, in the same run.

Scenarios:
- acks/s and ack latency with a window of in-flight publishes at 1, 50 and 500 connections,
  against the gateway (durable acks) and the bare Starlette/uvicorn ack server (ceiling);
  at 50 connections in ``--pairs`` alternating pairs (the median pair, and the range);
- the same at 50 connections with an event id of the client's in every event (as the SDKs
  send), which the log keeps as an idempotency key; events without one are not keys;
- ack latency at a fixed rate of 5,000 events/s (open loop);
- events/s acknowledged when clients send ``publish_batch`` of 100;
- fan-out: deliveries/s and publish-to-delivery latency at 100 and 1,000 subscribers,
  beside the bare fan-out server (``fanout_ws``).
The generator's own CPU use is reported beside each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from agentmem_client import event_id

from loadtest.bench import bare, fanout_ws, target
from loadtest.bench.report import machine, percentile, print_table, write_json
from loadtest.bench.target import SECRET as SECRET  # idle_connections uses it
from loadtest.bench.wsgen import FrameProtocol, WsConnection

# Importance 0.1: below the memory pipeline's default chain (0.7), so a target running the
# pipeline (``make run``) reads these records but makes no memories of them.
PUBLISH = (
    b'{"op":"publish","id":%d,"topic":"user-events","key":"k%d",'
    b'"event":{"type":"user_interaction","payload":{"action":"clicked","importance":0.1}}}'
)
EVENT = b'{"event":{"type":"user_interaction","payload":{"action":"clicked","importance":0.1}}}'
# The same event with an id of the client's, made as both SDKs make it (a UUIDv7), which
# makes it an idempotency key the log looks up and remembers.
PUBLISH_WITH_ID = (
    b'{"op":"publish","id":%d,"topic":"user-events","key":"k%d",'
    b'"event":{"type":"user_interaction","id":"%s",'
    b'"payload":{"action":"clicked","importance":0.1}}}'
)


def start_gateway(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A gateway of its own (memory pipeline off unless ``AGENTMEM_MEMORY_PIPELINE`` says)."""
    gateway = target.start_local(data_dir, os.environ.get("AGENTMEM_MEMORY_PIPELINE", "off"))
    assert gateway.proc is not None
    return gateway.proc, gateway.port


def start_bare() -> tuple[subprocess.Popen[bytes], int]:
    return bare.start("bare_ack_server")


class Endpoint:
    """Where a scenario connects: host, port, and the token of each connection (none: bare)."""

    def __init__(self, host: str, port: int, tokens: Sequence[str] | None = None) -> None:
        self.host = host
        self.port = port
        self.tokens = tokens

    @classmethod
    def of(cls, gateway: target.Gateway, connections: int) -> Endpoint:
        return cls(gateway.host, gateway.port, gateway.tokens(connections, "publisher"))

    @classmethod
    def bare(cls, port: int) -> Endpoint:
        return cls("127.0.0.1", port)


async def _connect(endpoint: Endpoint, count: int) -> list[WsConnection]:
    tokens = endpoint.tokens
    conns: list[WsConnection] = []
    for start in range(0, count, 100):
        conns += await asyncio.gather(
            *(
                WsConnection.open(
                    endpoint.host, endpoint.port, f"/ws?token={tokens[n]}" if tokens else "/ws"
                )
                for n in range(start, min(count, start + 100))
            )
        )
    if tokens:
        for conn in conns:
            welcome = await conn.recv_json()
            if welcome["op"] != "welcome":
                raise ConnectionError(f"expected welcome, got {welcome}")
    return conns


DRAIN_TIMEOUT_S = 30.0
"""How long a closed loop waits, after its run, for the acks of publishes still in flight."""


class _Reply(msgspec.Struct):
    op: str
    id: int = -1


_decode_reply = msgspec.json.Decoder(_Reply).decode


async def closed_loop(
    endpoint: Endpoint,
    connections: int,
    window: int,
    duration: float,
    batch: int = 0,
    event_ids: bool = False,
    drain_timeout: float = DRAIN_TIMEOUT_S,
) -> dict[str, Any]:
    """Each connection keeps ``window`` publishes in flight for ``duration`` seconds: every
    ack is answered with the next publish, those of one read in one write. A reply that is
    not an ack, a connection closed by the server, or publishes still unanswered
    ``drain_timeout`` seconds after the run fail it."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    acked = 0
    ids = itertools.count()
    stop = float("inf")
    batch_frame = (
        b'{"op":"publish_batch","id":%d,"topic":"user-events","events":['
        + b",".join([EVENT] * batch)
        + b"]}"
    )

    def frame(n: int) -> bytes:
        if batch:
            return batch_frame % n
        if event_ids:
            return PUBLISH_WITH_ID % (n, n % 64, event_id().encode())
        return PUBLISH % (n, n % 64)

    class Driver:
        def __init__(self) -> None:
            self.sent: dict[int, float] = {}
            self.welcomed = loop.create_future()
            self.drained = loop.create_future()
            self.protocol: FrameProtocol | None = None

        def fail(self, error: Exception) -> None:
            for future in (self.welcomed, self.drained):
                if not future.done():
                    future.set_exception(error)
                    # Marked as seen: a run fails before, or without, awaiting one of them.
                    future.exception()

        def start(self) -> None:
            assert self.protocol is not None
            now = time.perf_counter()
            out = []
            for _ in range(window):
                n = next(ids)
                self.sent[n] = now
                out.append(frame(n))
            self.protocol.send(out)

        def on_messages(self, messages: list[bytes]) -> None:
            nonlocal acked
            now = time.perf_counter()
            sent = self.sent
            out = []
            for message in messages:
                reply = _decode_reply(message)
                if reply.op == "ack" or reply.op == "batch_ack":
                    latencies.append(now - sent.pop(reply.id))
                    acked += batch or 1
                    if now < stop:
                        n = next(ids)
                        sent[n] = now
                        out.append(frame(n))
                elif reply.op == "welcome":
                    self.welcomed.set_result(None)
                else:
                    self.fail(RuntimeError(message[:300]))
                    return
            if out:
                assert self.protocol is not None
                self.protocol.send(out)
            elif not sent and now >= stop and not self.drained.done():
                self.drained.set_result(None)

    drivers = [Driver() for _ in range(connections)]
    try:
        await _open_all(endpoint, drivers)
        cpu = time.process_time()
        started = time.perf_counter()
        stop = started + duration
        for driver in drivers:
            driver.start()
        await asyncio.sleep(duration)
        # Each connection ends when the publishes it sent before the stop time are answered.
        try:
            async with asyncio.timeout(drain_timeout):
                await asyncio.gather(*(d.drained for d in drivers))
        except TimeoutError:
            unanswered = sum(len(d.sent) for d in drivers)
            raise RuntimeError(
                f"{unanswered} publishes still unanswered {drain_timeout:g} s after the run"
            ) from None
        elapsed = time.perf_counter() - started
        generator_cpu = (time.process_time() - cpu) / elapsed
    finally:
        for driver in drivers:
            if driver.protocol is not None:
                driver.protocol.close()
    return {
        "events_per_s": acked / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "generator_cpu": generator_cpu,
    }


async def _open_all(endpoint: Endpoint, drivers: Sequence[Any]) -> None:
    """Connect a ``FrameProtocol`` for each closed-loop driver, 100 at a time, and wait for
    each gateway session's welcome."""
    tokens = endpoint.tokens
    for first in range(0, len(drivers), 100):
        group = range(first, min(len(drivers), first + 100))
        opened = await asyncio.gather(
            *(
                FrameProtocol.open(
                    endpoint.host,
                    endpoint.port,
                    f"/ws?token={tokens[n]}" if tokens else "/ws",
                    drivers[n].on_messages,
                    drivers[n].fail,
                )
                for n in group
            )
        )
        for n, protocol in zip(group, opened, strict=True):
            drivers[n].protocol = protocol
    if tokens:
        await asyncio.gather(*(d.welcomed for d in drivers))


async def open_loop(
    endpoint: Endpoint, connections: int, rate: int, duration: float
) -> dict[str, Any]:
    conns = await _connect(endpoint, connections)
    latencies: list[float] = []
    sent: dict[int, float] = {}
    ids = itertools.count()

    async def read(conn: WsConnection) -> None:
        while True:
            reply = await conn.recv_json()
            latencies.append(time.perf_counter() - sent.pop(reply["id"]))

    readers = [asyncio.create_task(read(c)) for c in conns]
    tick = 0.002
    per_tick = rate * tick
    credit = 0.0
    cpu = time.process_time()
    started = time.perf_counter()
    next_tick = started
    turn = itertools.cycle(conns)
    while time.perf_counter() - started < duration:
        credit += per_tick
        while credit >= 1:
            n = next(ids)
            sent[n] = time.perf_counter()
            next(turn).send(PUBLISH % (n, n % 64))
            credit -= 1
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    deadline = time.perf_counter() + 5
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    for task in readers:
        task.cancel()
    for conn in conns:
        conn.close()
    return {
        "events_per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "generator_cpu": (time.process_time() - cpu) / elapsed,
        "unanswered": len(sent),
    }


def side_by_side(scenario: str, result: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """One table row: the gateway's figures beside the bare server's in the same run."""
    return {
        "scenario": scenario,
        "gateway_events_per_s": result["events_per_s"],
        "bare_events_per_s": ceiling["events_per_s"],
        "share_of_bare": result["events_per_s"] / ceiling["events_per_s"],
        "gateway_p50_ms": result["p50_ms"],
        "gateway_p99_ms": result["p99_ms"],
        "bare_p99_ms": ceiling["p99_ms"],
        "generator_cpu": result["generator_cpu"],
    }


def paired(
    at: Endpoint, ceiling_at: Endpoint, connections: int, window: int, duration: float, pairs: int
) -> dict[str, Any]:
    """The closed loop against the bare server and the gateway in ``pairs`` alternating
    pairs: the row of the pair with the median share, and the range of the shares. On a
    shared machine one pair's share moves by a third from run to run; the median of
    alternating pairs moves much less."""
    rows = []
    for _ in range(pairs):
        ceiling = asyncio.run(closed_loop(ceiling_at, connections, window, duration))
        result = asyncio.run(closed_loop(at, connections, window, duration))
        rows.append(side_by_side(f"publish, {connections} conn x window {window}", result, ceiling))
    rows.sort(key=lambda row: row["share_of_bare"])
    median = dict(rows[len(rows) // 2])
    if pairs > 1:
        median["scenario"] += f", median of {pairs} pairs"
        median["share_range"] = f"{rows[0]['share_of_bare']:.2f}-{rows[-1]['share_of_bare']:.2f}"
    return median


def publish_rows(gateway: target.Gateway, duration: float, pairs: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    proc, port = start_bare()
    ceiling_at = Endpoint.bare(port)
    try:
        for connections, window in ((1, 64), (50, 16), (500, 2)):
            at = Endpoint.of(gateway, connections)
            # The floor is at 50 connections: measured in alternating pairs.
            count = pairs if connections == 50 else 1
            rows.append(paired(at, ceiling_at, connections, window, duration, count))
        at = Endpoint.of(gateway, 50)
        ceiling = asyncio.run(closed_loop(ceiling_at, 50, 16, duration, event_ids=True))
        result = asyncio.run(closed_loop(at, 50, 16, duration, event_ids=True))
        rows.append(side_by_side("publish, 50 conn x window 16, client event ids", result, ceiling))
        at = Endpoint.of(gateway, 10)
        ceiling = asyncio.run(closed_loop(ceiling_at, 10, 4, duration, batch=100))
        result = asyncio.run(closed_loop(at, 10, 4, duration, batch=100))
        rows.append(side_by_side("publish_batch of 100, 10 conn x window 4", result, ceiling))
        at = Endpoint.of(gateway, 50)
        ceiling = asyncio.run(open_loop(ceiling_at, 50, 5_000, duration))
        result = asyncio.run(open_loop(at, 50, 5_000, duration))
        rows.append(side_by_side("fixed 5,000 events/s, 50 conn", result, ceiling))
    finally:
        bare.stop(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--out")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="alternating bare/gateway pairs at 50 connections (the floor's scenario)",
    )
    target.add_flags(parser)
    fanout_ws.add_flags(parser)
    args = parser.parse_args()
    fan_rows: list[dict[str, Any]] = []
    fan_raw: list[dict[str, Any]] = []
    with target.gateway(args.target, args.jwt_secret) as gateway:
        described = gateway.describe()
        rows = publish_rows(gateway, args.duration, max(1, args.pairs))
        if not args.skip_fanout:
            fan_rows, fan_raw = fanout_ws.compare(
                gateway,
                [int(c) for c in args.subscribers.split(",")],
                args.deliveries,
                args.duration,
                args.receiver_processes,
            )
    print_table("WebSocket publish: gateway (durable acks) vs bare ack server", rows)
    if fan_rows:
        print_table(fanout_ws.TITLE, fan_rows)
    info = machine()
    print(f"\ngateway: {described['url']} (started here: {described['started_by_benchmark']})")
    write_json(
        args.out,
        {
            "machine": info,
            "gateway": described,
            "bare_stack": bare.stack(),
            "publish": rows,
            "fan_out": fan_rows,
            "fan_out_raw": fan_raw,
        },
    )


if __name__ == "__main__":
    main()
