"""Several gateways on one Redis: publish on one, receive on another, fail over.

Two real gateway processes share a real ``redis-server`` (AOF with fsync on every write).
A publisher connects to gateway A (B as its second URL), a subscriber to gateway B. Gateway
A is killed with SIGKILL mid-stream; the publisher's SDK moves to B and re-sends what was
in flight with the same event ids. Every event must be in the log once and reach the
subscriber once, in offset order per partition.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from agentmem_client import Client
from servers import GatewayProcess, RedisServer

from gateway.streamlog.redis import RedisLog

TOTAL = 240
KILL_AFTER = 80


def ws(server: GatewayProcess) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


async def test_publish_on_one_gateway_deliver_on_another_and_fail_over(
    tmp_path: Path, make_token: Callable[..., str]
) -> None:
    redis = RedisServer(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    redis.start()
    env = {"AGENTMEM_STREAM_BACKEND": "redis", "AGENTMEM_REDIS_URL": redis.url}
    gateway_a = GatewayProcess(tmp_path / "a", env)
    gateway_b = GatewayProcess(tmp_path / "b", env)
    await asyncio.gather(asyncio.to_thread(gateway_a.start), asyncio.to_thread(gateway_b.start))
    token = make_token("mg", "o1")
    try:
        async with (
            Client([ws(gateway_a), ws(gateway_b)], token=token, backoff_max=0.5) as publisher,
            Client(ws(gateway_b), token=token) as reader,
        ):
            subscription = await reader.subscribe("user-events", from_="end")
            received: list[tuple[int, int, str]] = []

            async def consume() -> None:
                async for event in subscription:
                    received.append((event.partition, event.offset, event.data["id"]))
                    if len(received) >= TOTAL:
                        return

            consumer = asyncio.create_task(consume())
            acks = []
            for i in range(TOTAL):
                if i == KILL_AFTER:
                    gateway_a.kill()
                event = {
                    "type": "user_interaction",
                    "id": f"mg-{i}",
                    "payload": {"action": f"a{i}"},
                }
                acks.append(await publisher.publish("user-events", event, key=f"k{i % 7}"))
            assert publisher.url == ws(gateway_b), "the publisher moved to the surviving gateway"
            await asyncio.wait_for(consumer, 30)
    finally:
        gateway_a.stop()
        gateway_b.stop()

    assert [a.event_id for a in acks] == [f"mg-{i}" for i in range(TOTAL)]
    assert Counter(event_id for _, _, event_id in received) == Counter(
        f"mg-{i}" for i in range(TOTAL)
    ), "every event delivered exactly once"
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _ in received:
        by_partition[partition].append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())

    async with RedisLog(redis.url) as log:
        stored: Counter[str] = Counter()
        for partition in range(16):
            for record in await log.read("user-events", partition, 0, 10_000):
                stored[record.value.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()] += 1
    redis.stop()
    assert stored == Counter(f"mg-{i}" for i in range(TOTAL)), "each event written once"


async def test_event_on_one_gateway_memory_update_on_another_via_a_separate_worker(
    tmp_path: Path, make_token: Callable[..., str]
) -> None:
    """Gateway A takes the event, a standalone pipeline worker makes the memory, gateway B
    delivers the memory update: three processes sharing one Redis."""
    redis = RedisServer(tmp_path / "redis", "--appendonly", "yes").start()
    env = {"AGENTMEM_STREAM_BACKEND": "redis", "AGENTMEM_REDIS_URL": redis.url}
    gateway_a = GatewayProcess(tmp_path / "a", env)
    gateway_b = GatewayProcess(tmp_path / "b", env)
    await asyncio.gather(asyncio.to_thread(gateway_a.start), asyncio.to_thread(gateway_b.start))
    # A fresh Redis: the worker starts from the beginning and cannot miss the event.
    worker_env = {**gateway_a.env, "AGENTMEM_DATA_DIR": str(tmp_path / "worker")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway", "agents"],
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
    )
    token = make_token("mw", "o1")
    try:
        async with (
            Client(ws(gateway_b), token=token) as reader,
            Client(ws(gateway_a), token=token) as writer,
        ):
            chain = [{"smartmodule": "memory-filter", "params": {"user_id": "mw"}}]
            updates = await reader.subscribe("memory-updates", from_="end", filters=chain)
            ack = await writer.publish(
                "user-events",
                {
                    "type": "user_interaction",
                    "payload": {"action": "renewed plan", "importance": 0.9},
                },
                key="mw",
            )
            update = await asyncio.wait_for(anext(aiter(updates)), 20)
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        gateway_a.stop()
        gateway_b.stop()
        redis.stop()
    payload = update.data["payload"]
    assert payload["content"] == "renewed plan" and payload["user_id"] == "mw"
    assert payload["source"]["partition"] == ack.partition
    assert payload["source"]["offset"] == ack.offset
