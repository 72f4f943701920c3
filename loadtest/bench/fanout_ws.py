"""Fan-out over real WebSocket connections, the gateway beside the bare fan-out server.

    python -m loadtest.bench.fanout_ws [--target URL] [--subscribers 100,1000]
        [--deliveries 40000] [--duration 4] [--receiver-processes 2] [--out FILE]

One publisher sends timestamped ``log_entry`` events to ``system-metrics`` at a fixed rate
(``--deliveries`` / subscribers per second, so every row offers the same deliveries/s);
N connections subscribed to the topic receive them. The gateway's subscribers are admins
of the run's organization (one user per 100 connections); the ceiling is
``bare_fanout_server`` (broadcast with no log, no validation, no queues) measured in the
same run with the same generator. Latency runs from the send timestamp in the event to
its arrival at a receiver. Receivers run in their own processes (``wsrecv``); their CPU
is reported per process, so a saturated receiver shows as a value near 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from typing import Any

from loadtest.bench import bare, target
from loadtest.bench.report import (
    CpuMeter,
    ProcessCpuMeter,
    machine,
    percentile,
    print_table,
    write_json,
)
from loadtest.bench.wsgen import WsConnection
from loadtest.bench.wsrecv import Receivers

SUBSCRIBE = b'{"op":"subscribe","id":1,"sub":"s","topic":"system-metrics"}'
EVENT = (
    b'{"op":"publish","id":%d,"topic":"system-metrics","event":{"type":"log_entry",'
    b'"payload":{"level":"info","message":"fan-out","metadata":{"t":%.6f}}}}'
)


async def _publish(
    host: str, port: int, path: str, welcome: bool, rate: float, duration: float
) -> tuple[int, float]:
    """Publish at ``rate`` for ``duration`` s; (events published, publisher CPU in cores)."""
    publisher = await WsConnection.open(host, port, path)
    if welcome:
        first = await publisher.recv_json()
        if first.get("op") != "welcome":
            raise ConnectionError(f"expected welcome, got {first}")
    refused: list[bytes] = []

    async def drain() -> None:
        while True:
            answer = await publisher.recv()
            if not answer.startswith(b'{"op":"ack"'):
                refused.append(answer)

    reader = asyncio.create_task(drain())
    meter = CpuMeter()
    started = time.perf_counter()
    sent = 0
    tick = 0.002
    next_tick = started
    while (now := time.perf_counter()) - started < duration:
        due = int((now - started) * rate) + 1
        while sent < due:
            sent += 1
            publisher.send(EVENT % (sent, time.time()))
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    await asyncio.sleep(0.2)  # the last acks
    cpu = meter.cores()
    reader.cancel()
    publisher.close()
    if refused:
        raise RuntimeError(f"{len(refused)} publishes were refused, first: {refused[0][:300]!r}")
    return sent, cpu


def measure(
    host: str,
    port: int,
    subscriber_paths: list[str],
    publisher_path: str,
    welcome: bool,
    rate: float,
    duration: float,
    processes: int,
    server_pid: int | None = None,
    drain_s: float = 10.0,
) -> dict[str, Any]:
    """One fan-out run: receivers subscribe, the publisher publishes, deliveries are counted.

    ``server_pid``: the server's process when it runs here, to report its CPU."""
    receivers = Receivers(host, port, subscriber_paths, SUBSCRIBE, welcome, processes)
    try:
        receivers.start()
        server = ProcessCpuMeter(server_pid)
        started = time.time()
        published, publisher_cpu = asyncio.run(
            _publish(host, port, publisher_path, welcome, rate, duration)
        )
        expected = published * len(subscriber_paths)
        deadline = time.monotonic() + drain_s
        delivered, lost = receivers.count()
        while delivered < expected and time.monotonic() < deadline and not lost:
            time.sleep(0.02)
            delivered, lost = receivers.count()
        server_cpu = server.cores()
        delivered, last, latencies, cpu = receivers.stop()
        # From the first publish to the last delivery: the offered rate when the server keeps
        # up, its capacity when it does not.
        elapsed = max(duration, last - started)
    finally:
        receivers.close()
    return {
        "published_per_s": published / duration,
        "deliveries_per_s": delivered / elapsed,
        "delivered_share": delivered / expected if expected else 0.0,
        "connections_lost": lost,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "publisher_cpu": publisher_cpu,
        "receiver_cpu": sum(cpu),
        "receiver_cpu_max": max(cpu),
        "receiver_processes": len(cpu),
        "server_cpu": server_cpu,
        "elapsed_s": elapsed,
    }


def gateway_run(
    gateway: target.Gateway, subscribers: int, rate: float, duration: float, processes: int
) -> dict[str, Any]:
    tokens = gateway.tokens(subscribers, "fan-watcher", ("subscribe", "admin"))
    writer = gateway.token("fan-writer", ("publish",))
    return measure(
        gateway.host,
        gateway.port,
        [f"/ws?token={t}" for t in tokens],
        f"/ws?token={writer}",
        True,
        rate,
        duration,
        processes,
        gateway.proc.pid if gateway.proc else None,
    )


def bare_run(
    server: tuple[subprocess.Popen[bytes], int],
    subscribers: int,
    rate: float,
    duration: float,
    processes: int,
) -> dict[str, Any]:
    proc, port = server
    paths = ["/ws"] * subscribers
    return measure("127.0.0.1", port, paths, "/ws", False, rate, duration, processes, proc.pid)


def row(subscribers: int, result: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """One table row: the gateway beside the bare fan-out server at the same offered load."""
    return {
        "subscribers": subscribers,
        "published_per_s": result["published_per_s"],
        "gateway_deliveries_per_s": result["deliveries_per_s"],
        "bare_deliveries_per_s": ceiling["deliveries_per_s"],
        "share_of_bare": result["deliveries_per_s"] / ceiling["deliveries_per_s"]
        if ceiling["deliveries_per_s"]
        else float("nan"),
        "gateway_delivered": result["delivered_share"],
        "gateway_p50_ms": result["p50_ms"],
        "gateway_p99_ms": result["p99_ms"],
        "bare_p50_ms": ceiling["p50_ms"],
        "bare_p99_ms": ceiling["p99_ms"],
        "gateway_cpu": result["server_cpu"],
        "bare_cpu": ceiling["server_cpu"],
        "generator_cpu": result["publisher_cpu"] + result["receiver_cpu"],
        "bare_generator_cpu": ceiling["publisher_cpu"] + ceiling["receiver_cpu"],
        "receiver_cpu_max": max(result["receiver_cpu_max"], ceiling["receiver_cpu_max"]),
    }


def compare(
    gateway: target.Gateway,
    counts: list[int],
    deliveries: float,
    duration: float,
    processes: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(table rows, raw results) for each subscriber count, bare server first."""
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    proc, port = bare.start("bare_fanout_server")
    try:
        for subscribers in counts:
            rate = deliveries / subscribers
            ceiling = bare_run((proc, port), subscribers, rate, duration, processes)
            result = gateway_run(gateway, subscribers, rate, duration, processes)
            rows.append(row(subscribers, result, ceiling))
            raw.append({"subscribers": subscribers, "gateway": result, "bare": ceiling})
    finally:
        bare.stop(proc)
    return rows, raw


TITLE = "Fan-out: one publisher, N subscribers on system-metrics, gateway vs bare fan-out server"


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscribers", default="100,1000", help="subscriber counts, e.g. 100,1000"
    )
    parser.add_argument(
        "--deliveries",
        type=float,
        default=40_000,
        help="offered deliveries/s (publish rate x subscribers), the same for every row",
    )
    parser.add_argument("--receiver-processes", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target.add_flags(parser)
    add_flags(parser)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    counts = [int(c) for c in args.subscribers.split(",")]
    with target.gateway(args.target, args.jwt_secret) as gateway:
        described = gateway.describe()
        rows, raw = compare(
            gateway, counts, args.deliveries, args.duration, args.receiver_processes
        )
    print_table(TITLE, rows)
    print(f"\ngateway: {described['url']} (started here: {described['started_by_benchmark']})")
    write_json(
        args.out,
        {
            "machine": machine(),
            "gateway": described,
            "bare_stack": bare.stack(),
            "fan_out": rows,
            "raw": raw,
        },
    )


if __name__ == "__main__":
    main()
