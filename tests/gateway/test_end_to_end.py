"""End to end through real processes: a WebSocket publish becomes a memory, and its memory
update reaches a subscriber of ``memory-updates`` through a ``memory-filter`` chain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import GatewayProcess
from wsclient import WsClient, event


@pytest.fixture
def gateway_with_pipeline(tmp_path: Path) -> Iterator[GatewayProcess]:
    data = tmp_path / "data"
    process = GatewayProcess(data, {"AGENTMEM_MEMORY_PIPELINE": "serve"}).start()
    yield process
    process.stop()


async def test_publish_becomes_a_memory_update_on_a_filtered_subscription(
    gateway_with_pipeline: GatewayProcess, make_token: Callable[..., str]
) -> None:
    client = await WsClient.connect(gateway_with_pipeline.url, make_token("e2e", "acme"))
    await client.expect("welcome")
    chain = [{"smartmodule": "memory-filter", "params": {"user_id": "e2e", "ops": "created"}}]
    await client.send(
        {"op": "subscribe", "id": "s", "sub": "mem", "topic": "memory-updates", "filters": chain}
    )
    await client.expect("subscribed", id="s")
    outsider = await WsClient.connect(gateway_with_pipeline.url, make_token("other", "acme"))
    await outsider.expect("welcome")
    await outsider.send(
        {"op": "subscribe", "id": "s", "sub": "mem", "topic": "memory-updates", "filters": []}
    )
    await outsider.expect("subscribed", id="s")

    started = time.perf_counter()
    await client.send(
        {
            "op": "publish",
            "id": 1,
            "topic": "user-events",
            "key": "e2e",
            "event": event("opened the billing page", importance=0.9),
        }
    )
    ack = await client.expect("ack", id=1)
    await client.send(
        {
            "op": "publish",
            "id": 2,
            "topic": "user-events",
            "key": "e2e",
            "event": event("moved the mouse", importance=0.1),
        }
    )
    await client.expect("ack", id=2)
    update = await client.expect("event", sub="mem", timeout=15)
    latency_ms = (time.perf_counter() - started) * 1000
    payload = update["data"]["payload"]
    assert update["data"]["type"] == "memory_update"
    assert payload["op"] == "created" and payload["memory_type"] == "episodic"
    assert payload["content"] == "opened the billing page"
    assert payload["user_id"] == "e2e" and payload["organization_id"] == "acme"
    assert payload["source"] == {
        "topic": "user-events",
        "partition": ack["partition"],
        "offset": ack["offset"],
    }
    assert latency_ms < 15_000
    # The unimportant event made no memory; the other user sees nothing of this one.
    with pytest.raises(asyncio.TimeoutError):
        await client.expect("event", sub="mem", timeout=1.5)
    with pytest.raises(asyncio.TimeoutError):
        await outsider.expect("event", sub="mem", timeout=0.5)


def test_ready_reports_the_memory_service(gateway_with_pipeline: GatewayProcess) -> None:
    import httpx

    body = httpx.get(gateway_with_pipeline.url + "/ready").json()
    assert body["status"] == "ready" and body["log"] == "ok"
    assert body["memory"], "the memory store and pipeline are part of readiness"
