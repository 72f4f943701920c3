"""The crash test: SIGKILL a gateway under concurrent load; every acknowledged record survives.

Each round starts a real server on the same data directory, drives it with concurrent
single and batch publishes over HTTP, kills it with SIGKILL at a different moment, then
checks every record acknowledged so far (in all rounds) is stored, intact, at the
partition and offset its acknowledgement named, and that offsets have no gaps.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from servers import GatewayProcess

from gateway.streamlog.embedded import EmbeddedLog

KILL_AFTER_S = [0.15, 0.4, 0.8, 1.3]
"""When the server is killed in each round, counted from its first ``LOADED_AFTER_ACKS``
acknowledgements."""
LOADED_AFTER_ACKS = 20
ANSWERS_WITHIN_S = 15.0


async def _publisher(
    client: httpx.AsyncClient, token: str, worker: int, acked: list[dict[str, Any]], round_: int
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    sequence = 0
    while True:
        sequence += 1
        # Event ids are idempotency keys: unique per round, so none is a re-send.
        marker = f"r{round_}-w{worker}-s{sequence}"
        event = {"type": "user_interaction", "payload": {"action": marker}}
        try:
            if worker % 4 == 0:
                items = [
                    {"key": f"k{worker}", "event": {**event, "id": f"{marker}-{i}"}}
                    for i in range(10)
                ]
                response = await client.post(
                    "/api/v1/stream/batch",
                    json={"topic": "user-events", "events": items},
                    headers=headers,
                )
                if response.status_code == 200:
                    acked.extend(r for r in response.json()["results"] if r["success"])
            else:
                response = await client.post(
                    "/api/v1/stream/events",
                    json={"topic": "user-events", "key": f"k{worker % 7}", "event": event},
                    headers=headers,
                )
                if response.status_code == 200:
                    acked.append(response.json())
        except httpx.HTTPError:
            return


async def _load_until_killed(
    url: str, token: str, kill: Callable[[], None], after: float, round_: int
) -> list[dict[str, Any]]:
    acked: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        workers = [
            asyncio.create_task(_publisher(client, token, w, acked, round_)) for w in range(24)
        ]
        # The kill's moment counts from a loaded server, not from the first request: on a
        # slow host the first answers alone can take longer than the shortest moment.
        try:
            async with asyncio.timeout(ANSWERS_WITHIN_S):
                while len(acked) < LOADED_AFTER_ACKS:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            kill()
            raise AssertionError(
                f"the server acknowledged {len(acked)} publishes in {ANSWERS_WITHIN_S} s"
            ) from None
        await asyncio.sleep(after)
        kill()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    return acked


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_acknowledged_records_survive_sigkill(
    data_dir: Path, make_token: Callable[..., str], durability: str, request: pytest.FixtureRequest
) -> None:
    token = make_token()
    all_acked: list[dict[str, Any]] = []
    rounds = KILL_AFTER_S if durability == "process" else KILL_AFTER_S[1:3]
    for round_, after in enumerate(rounds):
        server = GatewayProcess(data_dir, {"AGENTMEM_DURABILITY": durability})
        await asyncio.to_thread(server.start)
        acked = await _load_until_killed(server.url, token, server.kill, after, round_)
        all_acked.extend(acked)

    async with EmbeddedLog(data_dir / "log.sqlite3") as log:
        stored: dict[tuple[int, int], bytes] = {}
        for partition in range(16):
            offset = 0
            while True:
                records = await log.read("user-events", partition, offset, 1000)
                if not records:
                    break
                for record in records:
                    assert record.offset == offset, "offsets must have no gaps"
                    stored[(partition, offset)] = record.value
                    offset += 1
    by_position: dict[tuple[int, int], str] = {}
    for ack in all_acked:
        position = (ack["partition"], ack["offset"])
        assert not ack["duplicate"], "no event was sent twice"
        assert position not in by_position, "two acknowledgements name the same offset"
        by_position[position] = ack["id"]
    missing = [p for p in by_position if p not in stored]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    for position, event_id in by_position.items():
        envelope = msgspec.json.decode(stored[position])
        assert envelope["id"] == event_id
        assert envelope["organization_id"] == "o1"
    per_partition: dict[int, int] = defaultdict(int)
    for partition, _ in stored:
        per_partition[partition] += 1
    assert sum(per_partition.values()) >= len(by_position)
