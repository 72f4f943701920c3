"""memory-filter with several params on a real gateway subscription: a published event
becomes a memory, and its memory update reaches the subscriptions whose params all match
(organization and user together, as the load test's SubscriberUser sends them) and no
other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import GatewayProcess
from wsclient import WsClient, event

MATCHING: dict[str, dict[str, Any]] = {
    "org": {"organization_id": "acme"},
    "user": {"user_id": "mf"},
    "org-user": {"organization_id": "acme", "user_id": "mf"},
    "user-org": {"user_id": "mf", "organization_id": "acme"},
    "all": {
        "organization_id": "acme",
        "user_id": "mf",
        "memory_types": "episodic",
        "min_importance": 0.5,
        "ops": ["created"],
    },
}
NOT_MATCHING: dict[str, dict[str, Any]] = {
    "other-org": {"organization_id": "globex", "user_id": "mf"},
    "other-user": {"organization_id": "acme", "user_id": "someone-else"},
    "other-op": {"organization_id": "acme", "user_id": "mf", "ops": "deleted"},
}


@pytest.fixture
def gateway_with_pipeline(tmp_path: Path) -> Iterator[GatewayProcess]:
    data = tmp_path / "data"
    process = GatewayProcess(data, {"AGENTMEM_MEMORY_PIPELINE": "serve"}).start()
    yield process
    process.stop()


async def test_memory_update_reaches_subscriptions_whose_params_all_match(
    gateway_with_pipeline: GatewayProcess, make_token: Callable[..., str]
) -> None:
    client = await WsClient.connect(gateway_with_pipeline.url, make_token("mf", "acme"))
    await client.expect("welcome")
    for name, params in {**MATCHING, **NOT_MATCHING}.items():
        chain = [{"smartmodule": "memory-filter", "params": params}]
        await client.send(
            {
                "op": "subscribe",
                "id": name,
                "sub": name,
                "topic": "memory-updates",
                "filters": chain,
            }
        )
        await client.expect("subscribed", id=name)

    await client.send(
        {
            "op": "publish",
            "id": 1,
            "topic": "user-events",
            "key": "mf",
            "event": event("renewed the subscription", importance=0.9),
        }
    )
    await client.expect("ack", id=1)
    for name in MATCHING:
        update = await client.expect("event", sub=name, timeout=15)
        payload = update["data"]["payload"]
        assert update["data"]["type"] == "memory_update", name
        assert payload["organization_id"] == "acme" and payload["user_id"] == "mf", name
        assert payload["content"] == "renewed the subscription", name
    for name in NOT_MATCHING:
        with pytest.raises(asyncio.TimeoutError):
            await client.expect("event", sub=name, timeout=0.5)
    await client.close()
