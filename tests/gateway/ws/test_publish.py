"""Publishing over real WebSockets: durable acks, idempotency, batches, bad input."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import httpx
import pytest
from rawws import StalledClient
from servers import GatewayProcess
from sqlitelock import write_lock_held
from wsclient import WsClient, event

from gateway.streamlog.partitioner import partition_for_key

from .conftest import Connect


def read_back(server: GatewayProcess, token: str, topic: str, partition: int, offset: int) -> dict:
    response = httpx.get(
        f"{server.url}/api/v1/topics/{topic}/records",
        params={"partition": partition, "offset": offset, "limit": 1},
        headers={"authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    [record] = response.json()["records"]
    assert record["offset"] == offset
    return record["data"]


async def test_ack_names_a_durable_readable_offset(
    connect: Connect, ws_gateway: GatewayProcess, make_token: Callable[..., str]
) -> None:
    client = await connect()
    await client.send(
        {
            "op": "publish",
            "id": 1,
            "topic": "user-events",
            "key": "u1",
            "event": event("saved", importance=0.9),
        }
    )
    ack = await client.expect("ack", id=1)
    assert ack["partition"] == partition_for_key(b"u1", 16) and ack["duplicate"] is False
    stored = read_back(ws_gateway, make_token(), "user-events", ack["partition"], ack["offset"])
    assert stored["id"] == ack["event_id"]
    assert stored["organization_id"] == "o1" and stored["user_id"] == "u1"
    assert stored["payload"]["action"] == "saved"


async def test_200_concurrent_connections_publishing(connect: Connect) -> None:
    clients = await asyncio.gather(*(connect(user=f"user{i % 20}") for i in range(200)))

    async def publish(client: WsClient, n: int) -> list[tuple[int, int]]:
        for i in range(5):
            await client.send(
                {
                    "op": "publish",
                    "id": i,
                    "topic": "chat-messages",
                    "key": f"conv{n % 10}",
                    "event": {
                        "type": "chat_message",
                        "payload": {"conversation_id": f"c{n}", "role": "user", "content": f"m{i}"},
                    },
                }
            )
        acks = [await client.expect("ack", id=i, timeout=30) for i in range(5)]
        return [(a["partition"], a["offset"]) for a in acks]

    results = await asyncio.gather(*(publish(c, n) for n, c in enumerate(clients)))
    positions = [p for r in results for p in r]
    assert len(set(positions)) == 1000
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in positions:
        by_partition[partition].append(offset)
    for offsets in by_partition.values():
        # Dense from the partition's first offset of this test on.
        offsets.sort()
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))


async def test_duplicate_event_ids_are_written_once(
    connect: Connect, ws_gateway: GatewayProcess, make_token: Callable[..., str]
) -> None:
    client = await connect()
    other = await connect()
    frame = {"op": "publish", "topic": "user-events", "event": {**event(), "id": "evt-dup-1"}}
    for i in range(5):
        await client.send({**frame, "id": i})
        await other.send({**frame, "id": 100 + i})
    acks = [await client.expect("ack", id=i) for i in range(5)]
    acks += [await other.expect("ack", id=100 + i) for i in range(5)]
    assert len({(a["partition"], a["offset"]) for a in acks}) == 1
    assert sum(not a["duplicate"] for a in acks) == 1
    # Another organization may use the same id for its own event.
    stranger = await connect(user="x", org="o2")
    await stranger.send({**frame, "id": 1})
    theirs = await stranger.expect("ack", id=1)
    assert (theirs["duplicate"] is False and theirs["offset"] != acks[0]["offset"]) or (
        theirs["partition"] != acks[0]["partition"]
    )


async def test_only_ids_the_client_chose_are_idempotency_keys(connect: Connect) -> None:
    """An event without an id gets a generated one that is not remembered: publishing it
    again under that id writes it again (the client never chose it, so nothing re-sends it)."""
    client = await connect()
    frame = {"op": "publish", "topic": "user-events", "key": "k", "event": event()}
    await client.send({**frame, "id": 1})
    generated = await client.expect("ack", id=1)
    resent = {**frame, "event": {**event(), "id": generated["event_id"]}}
    for i in (2, 3):
        await client.send({**resent, "id": i})
    first, second = await client.expect("ack", id=2), await client.expect("ack", id=3)
    assert first["duplicate"] is False and first["offset"] == generated["offset"] + 1
    # Once the client sends it, the id is its own: the second copy is the duplicate.
    assert second["duplicate"] is True and second["offset"] == first["offset"]


async def test_batch_acks_each_item_in_order(connect: Connect) -> None:
    client = await connect()
    events = [
        {"key": "a", "event": event("one")},
        {"event": {"type": "user_interaction", "payload": {"importance": 3}}},
        {"event": {"type": "agent_action", "payload": {"agent_id": "a", "action": "b"}}},
        {"key": "a", "event": {**event("four"), "id": "batch-dup"}},
        {"key": "a", "event": {**event("five"), "id": "batch-dup"}},
    ]
    await client.send({"op": "publish_batch", "id": "b1", "topic": "user-events", "events": events})
    ack = await client.expect("batch_ack", id="b1")
    results = ack["results"]
    assert [("error" in r) for r in results] == [False, True, True, False, False]
    assert results[1]["error"]["code"] == "invalid_event"
    assert results[1]["error"]["details"][0]["path"].startswith("$.events[1]")
    assert "does not accept" in results[2]["error"]["message"]
    assert results[4]["duplicate"] is True and results[4]["offset"] == results[3]["offset"]
    assert results[3]["offset"] == results[0]["offset"] + 1


async def test_msgpack_session(connect: Connect) -> None:
    client = await connect(encoding="msgpack")
    await client.send({"op": "subscribe", "id": 1, "sub": "s", "topic": "agent-actions"})
    await client.expect("subscribed", id=1)
    await client.send(
        {
            "op": "publish",
            "id": 2,
            "topic": "agent-actions",
            "event": {"type": "agent_action", "payload": {"agent_id": "bot", "action": "search"}},
        }
    )
    ack = await client.expect("ack", id=2)
    delivered = await client.expect("event", sub="s")
    assert delivered["offset"] == ack["offset"]
    assert delivered["data"]["payload"]["action"] == "search"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"op": "publish", "id": 1, "topic": "nope", "event": event()}, "unknown_topic"),
        (
            {
                "op": "publish",
                "id": 1,
                "topic": "user-events",
                "event": {"type": "user_interaction"},
            },
            "invalid_event",
        ),
        (
            {
                "op": "publish",
                "id": 1,
                "topic": "user-events",
                "event": {"type": "user_interaction", "payload": {"action": 5}},
            },
            "invalid_event",
        ),
        ({"op": "publish", "id": 1, "topic": "audit-logs", "event": event()}, "invalid_event"),
        ({"op": "publish", "id": 1, "topic": "memory-updates", "event": event()}, "forbidden"),
        (
            {
                "op": "publish",
                "id": 1,
                "topic": "user-events",
                "event": {**event(), "organization_id": "o2"},
            },
            "forbidden",
        ),
        (
            {
                "op": "publish",
                "id": 1,
                "topic": "user-events",
                "event": {**event(), "user_id": "someone-else"},
            },
            "forbidden",
        ),
        (
            {"op": "publish", "id": 1, "topic": "user-events", "event": event("x" * 300_000)},
            "invalid_event",
        ),
        (
            {"op": "publish", "id": 1, "topic": "user-events", "event": event(), "key": 12},
            "invalid_frame",
        ),
        ({"op": "dance", "id": 1}, "unknown_op"),
        ({"id": 1}, "invalid_frame"),
    ],
)
async def test_bad_publishes_get_errors_and_the_session_goes_on(
    connect: Connect, frame: dict, code: str
) -> None:
    client = await connect()
    await client.send(frame)
    error = await client.expect("error")
    assert error["code"] == code and error["message"]
    assert error.get("id") == 1
    await client.send({"op": "ping", "id": 99})
    assert (await client.expect("pong"))["id"] == 99


async def test_admin_may_publish_for_users_of_its_organization(connect: Connect) -> None:
    admin = await connect(user="ops", scopes=("admin",))
    await admin.send(
        {"op": "publish", "id": 1, "topic": "user-events", "event": {**event(), "user_id": "u7"}}
    )
    assert (await admin.expect("ack", id=1))["duplicate"] is False
    await admin.send(
        {
            "op": "publish",
            "id": 2,
            "topic": "user-events",
            "event": {**event(), "organization_id": "o2"},
        }
    )
    assert (await admin.expect("error", id=2))["code"] == "forbidden"


async def test_publish_scope_required(connect: Connect) -> None:
    reader = await connect(scopes=("subscribe",))
    await reader.send({"op": "publish", "id": 1, "topic": "user-events", "event": event()})
    error = await reader.expect("error", id=1)
    assert error["code"] == "forbidden" and "publish" in error["message"]


async def test_non_json_text_frame(connect: Connect) -> None:
    client = await connect()
    await client.connection.send("{{{{")
    error = await client.expect("error")
    assert error["code"] == "invalid_frame" and "id" not in error


async def test_oversized_frame_closes_1009_and_oversized_event_is_refused(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_max_frame_bytes="4096", max_event_bytes="512")
    client = await WsClient.connect(server.url, make_token())
    await client.expect("welcome")
    await client.send({"op": "publish", "id": 1, "topic": "user-events", "event": event("y" * 600)})
    assert (await client.expect("error", id=1))["code"] == "too_large"
    await client.send(
        {"op": "publish", "id": 2, "topic": "user-events", "event": event("z" * 5000)}
    )
    assert await client.close_code() == 1009


async def test_rate_limit_and_error_budget(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_publish_rate="5", ws_max_errors_per_minute="8")
    client = await WsClient.connect(server.url, make_token())
    await client.expect("welcome")
    for i in range(7):
        await client.send({"op": "publish", "id": i, "topic": "user-events", "event": event()})
    answers = [await client.recv() for _ in range(7)]
    limited = [a for a in answers if a["op"] == "error"]
    assert len(limited) == 2 and all(
        a["code"] == "rate_limited" and a["temporary"] for a in limited
    )
    for _ in range(10):
        await client.send({"op": "nonsense"})
    assert await client.close_code() == 4502


async def test_the_error_budget_holds_within_one_segment(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    # Publishes are refused as they are read: ten bad ones in one segment must not be
    # answered past the budget before the session closes.
    server = custom_gateway(ws_max_errors_per_minute="3")
    client = StalledClient("127.0.0.1", server.port, f"/ws?token={make_token()}")
    try:
        assert client.read_frames(1, 5)[0]["op"] == "welcome"
        client.send_together(
            [
                {"op": "publish", "id": i, "topic": "no-such-topic", "event": event()}
                for i in range(10)
            ]
        )
        frames = client.read_frames(20, 10)
    finally:
        client.close()
    errors = [frame for frame in frames if frame.get("op") == "error"]
    # Three within the budget, and the one past it.
    assert [e["code"] for e in errors] == ["unknown_topic"] * 4
    assert frames[-1] == {"close": 4502}


async def test_a_session_at_its_in_flight_limit_stops_reading_until_acks_go_out(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_max_in_flight="4")
    client = StalledClient("127.0.0.1", server.port, f"/ws?token={make_token('limit')}")

    def publishes_read() -> float:
        text = httpx.get(server.url + "/metrics", timeout=5).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('agentmem_ws_frames_in_total{op="publish"}')
        )
        return float(line.split()[-1])

    try:
        assert client.read_frames(1, 5)[0]["op"] == "welcome"
        # Another connection holds the log's write lock: no commit ends, no ack goes out.
        with write_lock_held(server.data_dir / "log.sqlite3"):
            client.send_together(
                [
                    {"op": "publish", "id": i, "topic": "user-events", "event": event(f"e{i}")}
                    for i in range(20)
                ]
            )
            await asyncio.sleep(1.0)
            # Four publishes were taken; the other sixteen wait unread.
            assert publishes_read() == 4
        frames = client.read_frames(20, 15)
    finally:
        client.close()
    acks = [frame for frame in frames if frame["op"] == "ack"]
    assert sorted(ack["id"] for ack in acks) == list(range(20))
    assert publishes_read() == 20
