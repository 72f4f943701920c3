"""Publish to memory update, end to end over WebSocket, at a steady rate.

    python -m loadtest.bench.memory_update_ws [--target URL] [--rate 1000] [--duration 5]
        [--out FILE]

A publisher connection sends ``chat_message`` events (user role, plain statements the
pipeline keeps as episodic memories) to ``chat-messages`` at ``--rate`` events/s; a
subscriber connection follows ``memory-updates`` through a ``memory-filter`` chain for the
run's organization and user. Latency runs from sending a publish to receiving the memory
update whose ``source`` is that record (the ack names its partition and offset). The
gateway must run the memory pipeline: one it starts here does
(``AGENTMEM_MEMORY_PIPELINE=serve``); a ``--target`` is probed first with one event, and
the benchmark says so and stops when no update comes back.

The ceiling, measured in the same run at the same rate: the bare fan-out server's
publish-to-delivery latency to one subscriber (the transport's share of the path).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import msgspec

from loadtest.bench import bare, fanout_ws, target
from loadtest.bench.report import (
    CpuMeter,
    ProcessCpuMeter,
    machine,
    percentile,
    print_table,
    write_json,
)
from loadtest.bench.wsgen import WsConnection

USER = "memory-bench"
CHAT = (
    b'{"op":"publish","id":%d,"topic":"chat-messages","key":"memory-bench",'
    b'"event":{"type":"chat_message","payload":{"conversation_id":"bench","role":"user",'
    b'"content":"looked at invoice %d on the billing page"}}}'
)


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class _UpdatePayload(msgspec.Struct):
    op: str
    source: _Source | None = None


class _Update(msgspec.Struct):
    type: str
    payload: _UpdatePayload


class _Frame(msgspec.Struct):
    op: str
    id: int | str | None = None
    partition: int = -1
    offset: int = -1
    data: _Update | None = None
    code: str | None = None
    message: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode


class NoPipeline(RuntimeError):
    """The target answered the publish but made no memory update of it."""


async def _open(gateway: target.Gateway, token: str) -> WsConnection:
    conn = await WsConnection.open(gateway.host, gateway.port, f"/ws?token={token}")
    welcome = _decode(await conn.recv())
    if welcome.op != "welcome":
        raise ConnectionError(f"expected welcome, got {welcome}")
    return conn


async def run(
    gateway: target.Gateway, rate: float, duration: float, probe_s: float
) -> dict[str, Any]:
    token = gateway.token(USER)
    subscriber = await _open(gateway, token)
    publisher = await _open(gateway, token)
    # The gateway already scopes the subscription to the token's organization; user_id is
    # the chain's criterion (adding organization_id as well currently drops every update).
    chain = [{"smartmodule": "memory-filter", "params": {"user_id": USER}}]
    subscriber.send(
        msgspec.json.encode(
            {"op": "subscribe", "id": 1, "sub": "m", "topic": "memory-updates", "filters": chain}
        )
    )
    answer = _decode(await subscriber.recv())
    if answer.op != "subscribed":
        raise RuntimeError(f"subscribing to memory-updates failed: {answer}")

    sent: dict[int, float] = {}  # publish id -> send time
    acked: dict[tuple[int, int], float] = {}  # (partition, offset) -> send time
    early: dict[tuple[int, int], float] = {}  # updates that arrived before their ack
    ack_latencies: list[float] = []
    latencies: list[float] = []
    refused: list[_Frame] = []
    arrived = asyncio.Event()

    def matched(sent_at: float, received_at: float) -> None:
        latencies.append(received_at - sent_at)
        arrived.set()

    async def read_acks() -> None:
        while True:
            frame = _decode(await publisher.recv())
            now = time.perf_counter()
            if frame.op != "ack" or not isinstance(frame.id, int):
                refused.append(frame)
                continue
            sent_at = sent.pop(frame.id)
            ack_latencies.append(now - sent_at)
            position = (frame.partition, frame.offset)
            if position in early:
                matched(sent_at, early.pop(position))
            else:
                acked[position] = sent_at

    async def read_updates() -> None:
        while True:
            frame = _decode(await subscriber.recv())
            now = time.perf_counter()
            source = frame.data.payload.source if frame.data is not None else None
            if frame.op != "event" or source is None or source.topic != "chat-messages":
                continue
            position = (source.partition, source.offset)
            sent_at = acked.pop(position, None)
            if sent_at is None:
                early[position] = now
            else:
                matched(sent_at, now)

    tasks = [asyncio.create_task(read_acks()), asyncio.create_task(read_updates())]
    ids = itertools.count(1)
    try:
        # The probe: one event must come back as an update, or the target runs no pipeline.
        n = next(ids)
        sent[n] = time.perf_counter()
        publisher.send(CHAT % (n, n))
        try:
            await asyncio.wait_for(arrived.wait(), probe_s)
        except TimeoutError:
            raise NoPipeline(
                f"no memory update within {probe_s:g} s of a published chat message: the "
                "gateway runs no memory pipeline (start it with AGENTMEM_MEMORY_PIPELINE=serve, "
                "the default of `make run`, or run `agentmem-gateway agents` beside it)"
            ) from None
        latencies.clear()
        ack_latencies.clear()
        meter = CpuMeter()
        server = ProcessCpuMeter(gateway.proc.pid if gateway.proc else None)
        started = time.perf_counter()
        published = 0
        while (now := time.perf_counter()) - started < duration:
            due = int((now - started) * rate) + 1
            while published < due:
                published += 1
                n = next(ids)
                sent[n] = time.perf_counter()
                publisher.send(CHAT % (n, n))
            await asyncio.sleep(0.002)
        deadline = time.perf_counter() + 30
        while len(latencies) < published and time.perf_counter() < deadline and not refused:
            await asyncio.sleep(0.01)
        generator_cpu = meter.cores()
        server_cpu = server.cores()
    finally:
        for task in tasks:
            task.cancel()
        subscriber.close()
        publisher.close()
    if refused:
        raise RuntimeError(f"{len(refused)} publishes were refused, first: {refused[0]}")
    return {
        "rate": rate,
        "published": published,
        "updates": len(latencies),
        "updated_share": len(latencies) / published if published else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "ack_p50_ms": percentile(ack_latencies, 50) * 1000,
        "ack_p99_ms": percentile(ack_latencies, 99) * 1000,
        "gateway_cpu": server_cpu,
        "generator_cpu": generator_cpu,
    }


def ceiling(rate: float, duration: float) -> dict[str, Any]:
    proc, port = bare.start("bare_fanout_server")
    try:
        return fanout_ws.bare_run((proc, port), 1, rate, duration, 1)
    finally:
        bare.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target.add_flags(parser)
    parser.add_argument("--rate", type=float, default=1_000, help="events/s (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--probe-seconds", type=float, default=20.0, help="wait this long for the first update"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    with target.gateway(args.target, args.jwt_secret, pipeline="serve") as gateway:
        described = gateway.describe()
        try:
            result = asyncio.run(run(gateway, args.rate, args.duration, args.probe_seconds))
        except NoPipeline as exc:
            print(f"skipped: {exc}")
            write_json(args.out, {"machine": machine(), "gateway": described, "skipped": str(exc)})
            return
    bare_result = ceiling(args.rate, args.duration)
    row = {
        "scenario": f"chat_message -> memory update, {args.rate:,.0f} events/s",
        **{k: v for k, v in result.items() if k not in ("rate",)},
        "bare_p50_ms": bare_result["p50_ms"],
        "bare_p99_ms": bare_result["p99_ms"],
        "bare_generator_cpu": bare_result["publisher_cpu"] + bare_result["receiver_cpu"],
    }
    print_table(
        "Publish to memory update over WebSocket (memory-filter subscription) vs bare "
        "publish-to-delivery",
        [row],
    )
    print(f"\ngateway: {described['url']} (started here: {described['started_by_benchmark']})")
    write_json(
        args.out,
        {
            "machine": machine(),
            "gateway": described,
            "bare_stack": bare.stack(),
            "results": [row],
            "bare": bare_result,
        },
    )


if __name__ == "__main__":
    main()
