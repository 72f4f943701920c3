"""WebSocket benchmarks of the gateway, each beside the bare ack server in the same run.

    python -m loadtest.bench.ws_gateway [--duration 4] [--out loadtest/results/ws.json]

Scenarios:
- acks/s and ack latency with a window of in-flight publishes at 1, 50 and 500 connections,
  against the gateway (durable acks) and the bare Starlette/uvicorn ack server (ceiling);
- ack latency at a fixed rate of 5,000 events/s (open loop);
- events/s acknowledged when clients send ``publish_batch`` of 100;
- fan-out: deliveries/s and publish-to-delivery latency at 100 and 1,000 subscribers.
The generator's own CPU use is reported beside each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from gateway.auth.tokens import TokenAuthority
from loadtest.bench.report import machine, percentile, print_table, write_json
from loadtest.bench.wsgen import WsConnection

SECRET = "bench-secret-0123456789abcdef-0123456789"
PUBLISH = (
    b'{"op":"publish","id":%d,"topic":"user-events","key":"k%d",'
    b'"event":{"type":"user_interaction","payload":{"action":"clicked","importance":0.8}}}'
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int) -> None:
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_gateway(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **os.environ,
        "AGENTMEM_DATA_DIR": str(data_dir),
        "AGENTMEM_JWT_SECRET": SECRET,
        "AGENTMEM_LOG_LEVEL": "warning",
        "AGENTMEM_WS_PUBLISH_RATE": "10000000",
        "AGENTMEM_WS_MAX_CONNECTIONS_PER_USER": "100000",
        # The gateway alone: the memory pipeline has its own benchmark.
        "AGENTMEM_MEMORY_PIPELINE": os.environ.get("AGENTMEM_MEMORY_PIPELINE", "off"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ready(port)
    httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).raise_for_status()
    return proc, port


def start_bare() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench.bare_ack_server", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ready(port)
    return proc, port


async def _connect(port: int, token: str | None, count: int) -> list[WsConnection]:
    path = f"/ws?token={token}" if token else "/ws"
    conns: list[WsConnection] = []
    for start in range(0, count, 100):
        conns += await asyncio.gather(
            *(
                WsConnection.open("127.0.0.1", port, path)
                for _ in range(start, min(count, start + 100))
            )
        )
    if token:
        for conn in conns:
            welcome = await conn.recv_json()
            assert welcome["op"] == "welcome", welcome
    return conns


async def closed_loop(
    port: int, token: str | None, connections: int, window: int, duration: float, batch: int = 0
) -> dict[str, Any]:
    conns = await _connect(port, token, connections)
    latencies: list[float] = []
    acked = 0
    ids = itertools.count()
    event = b'{"event":{"type":"user_interaction","payload":{"action":"clicked","importance":0.8}}}'
    batch_frame = (
        b'{"op":"publish_batch","id":%d,"topic":"user-events","events":['
        + b",".join([event] * batch)
        + b"]}"
    )

    def frame(n: int) -> bytes:
        return batch_frame % n if batch else PUBLISH % (n, n % 64)

    async def drive(conn: WsConnection, stop: float) -> None:
        nonlocal acked
        sent: dict[int, float] = {}
        for _ in range(window):
            n = next(ids)
            sent[n] = time.perf_counter()
            conn.send(frame(n))
        while sent:
            reply = await conn.recv_json()
            if reply["op"] not in ("ack", "batch_ack"):
                raise RuntimeError(reply)
            now = time.perf_counter()
            latencies.append(now - sent.pop(reply["id"]))
            acked += batch or 1
            if now < stop:
                n = next(ids)
                sent[n] = time.perf_counter()
                conn.send(frame(n))

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(drive(c, started + duration) for c in conns))
    elapsed = time.perf_counter() - started
    generator_cpu = (time.process_time() - cpu) / elapsed
    for conn in conns:
        conn.close()
    return {
        "events_per_s": acked / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "generator_cpu": generator_cpu,
    }


async def open_loop(
    port: int, token: str | None, connections: int, rate: int, duration: float
) -> dict[str, Any]:
    conns = await _connect(port, token, connections)
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


class _Delivered(msgspec.Struct):
    data: dict[str, Any]


_delivered = msgspec.json.Decoder(_Delivered)


async def fan_out(port: int, subscribers: int, rate: int, duration: float) -> dict[str, Any]:
    authority = TokenAuthority(SECRET)
    reader_token = authority.mint("watcher", "bench", ("subscribe", "admin"), 3600)
    writer_token = authority.mint("writer", "bench", ("publish",), 3600)
    subs = await _connect(port, reader_token, subscribers)
    for conn in subs:
        conn.send(b'{"op":"subscribe","id":1,"sub":"s","topic":"system-metrics"}')
    for conn in subs:
        reply = await conn.recv_json()
        assert reply["op"] == "subscribed", reply
    [publisher] = await _connect(port, writer_token, 1)
    latencies: list[float] = []
    delivered = 0

    async def read(conn: WsConnection) -> None:
        nonlocal delivered
        while True:
            frame = _delivered.decode(await conn.recv())
            latencies.append(time.time() - frame.data["payload"]["metadata"]["t"])
            delivered += 1

    async def drain_acks() -> None:
        while True:
            await publisher.recv()

    tasks = [asyncio.create_task(read(c)) for c in subs] + [asyncio.create_task(drain_acks())]
    cpu = time.process_time()
    started = time.perf_counter()
    n = 0
    tick = 0.005
    credit = 0.0
    while time.perf_counter() - started < duration:
        credit += rate * tick
        while credit >= 1:
            credit -= 1
            n += 1
            publisher.send(
                b'{"op":"publish","id":%d,"topic":"system-metrics","event":{"type":"log_entry",'
                b'"payload":{"level":"info","message":"m","metadata":{"t":%.6f}}}}'
                % (n, time.time())
            )
        await asyncio.sleep(tick)
    expected = n * subscribers
    deadline = time.perf_counter() + 10
    while delivered < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    generator_cpu = (time.process_time() - cpu) / elapsed
    for task in tasks:
        task.cancel()
    for conn in [*subs, publisher]:
        conn.close()
    return {
        "subscribers": subscribers,
        "published_per_s": n / duration,
        "deliveries_per_s": delivered / elapsed,
        "delivered_share": delivered / expected if expected else 0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "generator_cpu": generator_cpu,
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--out")
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args()
    token = TokenAuthority(SECRET).mint("bench", "bench", ("publish", "subscribe"), 3600)
    rows: list[dict[str, Any]] = []
    fan_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bare, bare_port = start_bare()
        gateway, gateway_port = start_gateway(Path(tmp))
        try:
            for connections, window in ((1, 64), (50, 16), (500, 2)):
                ceiling = asyncio.run(
                    closed_loop(bare_port, None, connections, window, args.duration)
                )
                result = asyncio.run(
                    closed_loop(gateway_port, token, connections, window, args.duration)
                )
                rows.append(
                    side_by_side(f"publish, {connections} conn x window {window}", result, ceiling)
                )
            ceiling = asyncio.run(closed_loop(bare_port, None, 10, 4, args.duration, batch=100))
            result = asyncio.run(closed_loop(gateway_port, token, 10, 4, args.duration, batch=100))
            rows.append(side_by_side("publish_batch of 100, 10 conn x window 4", result, ceiling))
            ceiling = asyncio.run(open_loop(bare_port, None, 50, 5_000, args.duration))
            result = asyncio.run(open_loop(gateway_port, token, 50, 5_000, args.duration))
            rows.append(side_by_side("fixed 5,000 events/s, 50 conn", result, ceiling))
            if not args.skip_fanout:
                for subscribers, rate in ((100, 400), (1_000, 40)):
                    fan_rows.append(
                        asyncio.run(fan_out(gateway_port, subscribers, rate, args.duration))
                    )
        finally:
            for proc in (bare, gateway):
                proc.terminate()
                proc.wait()
    print_table("WebSocket publish: gateway (durable acks) vs bare ack server", rows)
    if fan_rows:
        print_table("Fan-out: one topic, admin subscribers, one publisher", fan_rows)
    info = machine()
    print(f"\nmachine: {info}")
    write_json(args.out, {"machine": info, "publish": rows, "fan_out": fan_rows})


if __name__ == "__main__":
    main()
