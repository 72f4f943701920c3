"""Subscriptions over real WebSockets: positions, resume without gap or duplicate, tenancy,
slow consumers."""

from __future__ import annotations

import asyncio
import json
import struct
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rawws import StalledClient
from servers import GatewayProcess
from wsclient import WsClient, event

from .conftest import Connect


async def publish_many(
    client: WsClient, topic: str, count: int, tag: str, key: str | None = None
) -> list[dict]:
    for i in range(count):
        frame = {"op": "publish", "id": f"{tag}-{i}", "topic": topic, "event": event(f"{tag}-{i}")}
        if key is not None:
            frame["key"] = key
        await client.send(frame)
    return [await client.expect("ack", id=f"{tag}-{i}", timeout=20) for i in range(count)]


async def collect(client: WsClient, sub: str, count: int, timeout: float = 20) -> list[dict]:
    return [await client.expect("event", sub=sub, timeout=timeout) for _ in range(count)]


async def test_subscribe_from_beginning_end_and_offsets(connect: Connect) -> None:
    client = await connect(user="pos")
    acks = await publish_many(client, "system-metrics", 0, "none")
    await client.send(
        {
            "op": "publish",
            "id": "a",
            "topic": "system-metrics",
            "key": "k",
            "event": {"type": "log_entry", "payload": {"level": "info", "message": "m1"}},
        }
    )
    first = await client.expect("ack", id="a")
    await client.send({"op": "subscribe", "id": 1, "sub": "end", "topic": "system-metrics"})
    subscribed = await client.expect("subscribed", id=1)
    assert subscribed["positions"][str(first["partition"])] == first["offset"] + 1
    await client.send(
        {
            "op": "subscribe",
            "id": 2,
            "sub": "beginning",
            "topic": "system-metrics",
            "from": "beginning",
        }
    )
    assert (await client.expect("subscribed", id=2))["positions"][str(first["partition"])] == 0
    got = await client.expect("event", sub="beginning")
    assert got["offset"] == 0 and got["partition"] == first["partition"]
    await client.send(
        {
            "op": "subscribe",
            "id": 3,
            "sub": "at",
            "topic": "system-metrics",
            "from": {str(first["partition"]): first["offset"]},
        }
    )
    await client.expect("subscribed", id=3)
    at = await client.expect("event", sub="at")
    assert at["offset"] == first["offset"] and at["data"]["payload"]["message"] == "m1"
    assert acks == []


async def test_resume_without_gap_or_duplicate_while_producers_go_on(connect: Connect) -> None:
    producer = await connect(user="res")
    reader = await connect(user="res")
    await reader.send({"op": "subscribe", "id": 1, "sub": "s", "topic": "agent-actions"})
    positions = {
        int(p): o for p, o in (await reader.expect("subscribed", id=1))["positions"].items()
    }

    stop = asyncio.Event()
    acked: list[dict] = []

    async def produce() -> None:
        i = 0
        while not stop.is_set():
            await producer.send(
                {
                    "op": "publish",
                    "id": i,
                    "topic": "agent-actions",
                    "key": f"k{i % 5}",
                    "event": {
                        "type": "agent_action",
                        "payload": {"agent_id": "a", "action": f"x{i}"},
                    },
                }
            )
            acked.append(await producer.expect("ack", id=i))
            i += 1

    task = asyncio.create_task(produce())
    delivered: dict[int, list[int]] = defaultdict(list)
    for frame in await collect(reader, "s", 40):
        delivered[frame["partition"]].append(frame["offset"])
        positions[frame["partition"]] = frame["offset"] + 1
    await reader.close()
    await asyncio.sleep(0.2)  # records keep arriving while the reader is away
    again = await connect(user="res")
    await again.send(
        {
            "op": "subscribe",
            "id": 1,
            "sub": "s",
            "topic": "agent-actions",
            "from": {str(p): o for p, o in positions.items()},
        }
    )
    await again.expect("subscribed", id=1)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    expected = len(acked)
    for frame in await collect(again, "s", expected - 40):
        delivered[frame["partition"]].append(frame["offset"])
    acked_positions = sorted((a["partition"], a["offset"]) for a in acked)
    seen = sorted((p, o) for p, offsets in delivered.items() for o in offsets)
    assert seen == acked_positions, "every acknowledged record exactly once"
    for offsets in delivered.values():
        assert offsets == sorted(offsets)
    with pytest.raises(asyncio.TimeoutError):
        await again.expect("event", sub="s", timeout=0.3)


async def test_tenancy_is_enforced_on_every_delivery(connect: Connect) -> None:
    writer = await connect(user="alice", org="acme")
    same_user = await connect(user="alice", org="acme")
    other_user = await connect(user="bob", org="acme")
    admin = await connect(user="root", org="acme", scopes=("admin",))
    other_org = await connect(user="alice", org="evil", scopes=("subscribe", "admin"))
    for n, client in enumerate((same_user, other_user, admin, other_org)):
        await client.send({"op": "subscribe", "id": n, "sub": "t", "topic": "chat-messages"})
        await client.expect("subscribed", id=n)
    await writer.send(
        {
            "op": "publish",
            "id": 1,
            "topic": "chat-messages",
            "event": {
                "type": "chat_message",
                "payload": {"conversation_id": "c", "role": "user", "content": "secret"},
            },
        }
    )
    await writer.expect("ack", id=1)
    assert (await same_user.expect("event", sub="t"))["data"]["payload"]["content"] == "secret"
    assert (await admin.expect("event", sub="t"))["data"]["user_id"] == "alice"
    for outsider in (other_user, other_org):
        with pytest.raises(asyncio.TimeoutError):
            await outsider.expect("event", sub="t", timeout=0.5)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"op": "subscribe", "id": 1, "sub": "s", "topic": "nope"}, "unknown_topic"),
        (
            {"op": "subscribe", "id": 1, "sub": "s", "topic": "audit-logs", "from": {"8": 0}},
            "invalid_offset",
        ),
        (
            {"op": "subscribe", "id": 1, "sub": "s", "topic": "audit-logs", "from": "middle"},
            "invalid_frame",
        ),
        (
            {
                "op": "subscribe",
                "id": 1,
                "sub": "s",
                "topic": "audit-logs",
                "filters": [{"smartmodule": "nope"}],
            },
            "unknown_smartmodule",
        ),
        (
            {
                "op": "subscribe",
                "id": 1,
                "sub": "s",
                "topic": "memory-updates",
                "filters": [{"smartmodule": "memory-filter", "params": {"min_importance": "lots"}}],
            },
            "invalid_smartmodule_params",
        ),
        ({"op": "unsubscribe", "id": 1, "sub": "never"}, "unknown_subscription"),
    ],
)
async def test_bad_subscriptions(connect: Connect, frame: dict, code: str) -> None:
    client = await connect()
    await client.send(frame)
    error = await client.expect("error", id=1)
    assert error["code"] == code


async def test_subscription_names_scope_and_unsubscribe(connect: Connect) -> None:
    client = await connect(user="uns")
    await client.send({"op": "subscribe", "id": 1, "sub": "s", "topic": "user-events"})
    await client.expect("subscribed", id=1)
    await client.send({"op": "subscribe", "id": 2, "sub": "s", "topic": "user-events"})
    assert (await client.expect("error", id=2))["code"] == "limit_exceeded"
    await client.send({"op": "unsubscribe", "id": 3, "sub": "s"})
    await client.expect("unsubscribed", id=3)
    await publish_many(client, "user-events", 3, "after")
    with pytest.raises(asyncio.TimeoutError):
        await client.expect("event", timeout=0.4)
    writer_only = await connect(scopes=("publish",))
    await writer_only.send({"op": "subscribe", "id": 1, "sub": "s", "topic": "user-events"})
    assert (await writer_only.expect("error", id=1))["code"] == "forbidden"


async def test_subscription_limit(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_max_subscriptions="2")
    client = await WsClient.connect(server.url, make_token())
    await client.expect("welcome")
    for n in range(3):
        await client.send({"op": "subscribe", "id": n, "sub": f"s{n}", "topic": "user-events"})
    await client.expect("subscribed", id=0)
    await client.expect("subscribed", id=1)
    assert (await client.expect("error", id=2))["code"] == "limit_exceeded"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _load(producer: WsClient, rounds: int, tag: str) -> int:
    padding = "p" * 2_000
    for round_ in range(rounds):
        for i in range(200):
            await producer.send(
                {
                    "op": "publish_batch",
                    "id": f"{tag}{round_}-{i}",
                    "topic": "user-events",
                    "events": [
                        {"event": event(f"{round_}-{i}-{j}", context={"pad": padding})}
                        for j in range(5)
                    ],
                }
            )
        for i in range(200):
            await producer.expect("batch_ack", id=f"{tag}{round_}-{i}", timeout=30)
    return rounds * 1000


async def test_slow_consumer_is_cut_off_with_bounded_memory_then_resumes(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(
        ws_send_queue_frames="64", ws_send_queue_bytes="65536", ws_slow_consumer_s="1"
    )
    pid = server.proc.pid  # type: ignore[union-attr]
    token = make_token("slow", "o1")
    producer = await WsClient.connect(server.url, token)
    await producer.expect("welcome")
    # The same load without a subscriber first: caches and buffers reach their working size.
    start = rss_kib(pid)
    await _load(producer, 4, "warm")
    warm = rss_kib(pid)
    slow = StalledClient("127.0.0.1", server.port, f"/ws?token={token}")
    slow.send({"op": "subscribe", "id": 1, "sub": "s", "topic": "user-events"})
    await asyncio.sleep(0.3)
    total = await _load(producer, 4, "slow")
    stalled = rss_kib(pid)
    closed_slow = 'agentmem_ws_disconnects_total{code="4001"} 1.0'
    for _ in range(100):  # the client keeps not reading until the server gives up on it
        if closed_slow in httpx.get(server.url + "/metrics").text:
            break
        await asyncio.sleep(0.1)
    growth, control = (stalled - warm) / 1024, (warm - start) / 1024
    assert growth - control < 16, (
        f"server memory grew by {growth:.0f} MiB with a stalled client, "
        f"{control:.0f} MiB for the same load without it"
    )
    frames = await asyncio.to_thread(slow.read_all_frames, 20)
    slow.close()
    texts = [json.loads(payload) for opcode, payload in frames if opcode == 1]
    assert texts[0]["op"] == "welcome" and texts[1]["op"] == "subscribed"
    positions = texts[1]["positions"]
    # The close frame arrives if the client read in time; otherwise the connection was
    # dropped after the grace period. Either way the server says why.
    opcode, payload = frames[-1]
    if opcode == 8:
        assert struct.unpack("!H", payload[:2])[0] == 4001
    assert closed_slow in httpx.get(server.url + "/metrics").text
    events = [t for t in texts if t["op"] == "event"]
    assert len(events) < total, "the stalled client cannot have received everything"
    for event_frame in events:
        positions[str(event_frame["partition"])] = event_frame["offset"] + 1
    # The client resumes from the offsets after what it got, and gets the rest, exactly once.
    again = await WsClient.connect(server.url, token)
    await again.expect("welcome")
    await again.send(
        {"op": "subscribe", "id": 1, "sub": "s", "topic": "user-events", "from": positions}
    )
    await again.expect("subscribed", id=1)
    seen = {(e["partition"], e["offset"]) for e in events}
    for _ in range(total - len(events)):
        frame = await again.expect("event", sub="s", timeout=30)
        position = (frame["partition"], frame["offset"])
        assert position not in seen
        seen.add(position)
    assert len(seen) == total


async def test_filters_run_smartmodules_and_tenancy_still_applies(connect: Connect) -> None:
    """event-filter keeps important events; data-transform maps them to memory items."""
    writer = await connect(user="fil", org="acme")
    other = await connect(user="intruder", org="acme")
    chain = [
        {"smartmodule": "event-filter", "params": {"min_importance": 0.6}},
        {"smartmodule": "data-transform"},
    ]
    for client in (writer, other):
        await client.send(
            {"op": "subscribe", "id": 1, "sub": "f", "topic": "user-events", "filters": chain}
        )
        await client.expect("subscribed", id=1)
    await writer.send(
        {"op": "subscribe", "id": 2, "sub": "plain", "topic": "user-events", "filters": []}
    )
    await writer.expect("subscribed", id=2)
    for i, importance in enumerate([0.9, 0.1, 0.7, 0.3]):
        await writer.send(
            {
                "op": "publish",
                "id": i,
                "topic": "user-events",
                "key": "same",
                "event": event(f"act{i}", importance=importance),
            }
        )
        await writer.expect("ack", id=i)
    got = [await writer.expect("event", sub="f") for _ in range(2)]
    assert [g["data"]["content"] for g in got] == ["act0", "act2"]
    assert all(g["data"]["memory_type"] == "episodic" for g in got)
    assert [g["offset"] for g in got] == sorted(g["offset"] for g in got)
    plain = [await writer.expect("event", sub="plain") for _ in range(4)]
    assert len(plain) == 4
    with pytest.raises(asyncio.TimeoutError):
        await writer.expect("event", sub="f", timeout=0.3)
    with pytest.raises(asyncio.TimeoutError):
        await other.expect("event", sub="f", timeout=0.3)


async def test_filtered_subscription_replays_from_the_log(connect: Connect) -> None:
    writer = await connect(user="rep", org="acme")
    acks = []
    for i, importance in enumerate([0.95, 0.2, 0.8]):
        await writer.send(
            {
                "op": "publish",
                "id": i,
                "topic": "user-events",
                "key": "rep",
                "event": event(f"r{i}", importance=importance),
            }
        )
        acks.append(await writer.expect("ack", id=i))
    partition = acks[0]["partition"]
    await writer.send(
        {
            "op": "subscribe",
            "id": 9,
            "sub": "r",
            "topic": "user-events",
            "from": {str(partition): acks[0]["offset"]},
            "filters": [{"smartmodule": "event-filter", "params": {"min_importance": 0.5}}],
        }
    )
    await writer.expect("subscribed", id=9)
    got = [await writer.expect("event", sub="r") for _ in range(2)]
    assert [g["offset"] for g in got] == [acks[0]["offset"], acks[2]["offset"]]


def test_registry_is_listed_over_http(
    ws_gateway: GatewayProcess, make_token: Callable[..., str]
) -> None:
    response = httpx.get(
        ws_gateway.url + "/api/v1/smartmodules",
        headers={"authorization": f"Bearer {make_token()}"},
    )
    assert response.status_code == 200
    modules = {m["name"]: m for m in response.json()["smartmodules"]}
    assert {"event-filter", "data-transform", "event-aggregate", "memory-filter"} <= set(modules)
    assert modules["event-filter"]["kind"] == "filter"
    assert any(p["name"] == "min_importance" for p in modules["event-filter"]["params"])
    assert httpx.get(ws_gateway.url + "/api/v1/smartmodules").status_code == 401


async def test_aggregate_filter_keeps_its_own_state_per_subscription(connect: Connect) -> None:
    """An aggregate is stateful: each subscription has its own instance and initial state."""
    client = await connect(user="agg", org="acme")
    initial = '{"event_count":10,"total_importance":0,"last_event":null}'
    for sub, filters in (
        ("fresh", [{"smartmodule": "event-aggregate"}]),
        ("seeded", [{"smartmodule": "event-aggregate", "aggregate_initial": initial}]),
    ):
        await client.send(
            {"op": "subscribe", "id": sub, "sub": sub, "topic": "user-events", "filters": filters}
        )
        await client.expect("subscribed", id=sub)
    for i in range(3):
        await client.send(
            {
                "op": "publish",
                "id": i,
                "topic": "user-events",
                "key": "agg",
                "event": event(f"x{i}"),
            }
        )
        await client.expect("ack", id=i)
    fresh = [await client.expect("event", sub="fresh") for _ in range(3)]
    seeded = [await client.expect("event", sub="seeded") for _ in range(3)]
    assert [f["data"]["event_count"] for f in fresh] == [1, 2, 3]
    assert [f["data"]["event_count"] for f in seeded] == [11, 12, 13]


async def test_end_starts_after_every_acknowledged_record(connect: Connect) -> None:
    """An ack can reach the client before the topic's shared tail has read the record;
    a subscription from "end" made then must still not deliver it."""
    client = await connect(user="end-race")
    for round_ in range(20):
        [before] = await publish_many(client, "user-events", 1, f"before-{round_}", key="k")
        sub = f"end-{round_}"
        await client.send({"op": "subscribe", "id": sub, "sub": sub, "topic": "user-events"})
        subscribed = await client.expect("subscribed", id=sub)
        assert subscribed["positions"][str(before["partition"])] == before["offset"] + 1
        [after] = await publish_many(client, "user-events", 1, f"after-{round_}", key="k")
        [delivered] = await collect(client, sub, 1)
        assert delivered["offset"] == after["offset"]
        await client.send({"op": "unsubscribe", "id": f"u-{round_}", "sub": sub})
        await client.expect("unsubscribed", id=f"u-{round_}")


def _deliveries(server: GatewayProcess) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("agentmem_ws_deliveries_total "):
            return float(line.split()[1])
    raise AssertionError("no agentmem_ws_deliveries_total in /metrics")


async def test_live_deliveries_carry_each_subscriptions_name_and_are_counted(
    connect: Connect, custom_gateway: Callable[..., GatewayProcess]
) -> None:
    server = custom_gateway()
    # Subscriptions of the same name in several sessions share one encoded frame; one of
    # another name and one in MessagePack must still get their own.
    clients = [
        await connect(user="live", server=server),
        await connect(user="live", server=server),
        await connect(user="live", server=server, encoding="msgpack"),
    ]
    for n, client in enumerate(clients):
        await client.send({"op": "subscribe", "id": n, "sub": "same", "topic": "user-events"})
        await client.expect("subscribed", id=n)
    await clients[0].send({"op": "subscribe", "id": 9, "sub": "other", "topic": "user-events"})
    await clients[0].expect("subscribed", id=9)
    before = _deliveries(server)
    acks = await publish_many(clients[1], "user-events", 5, "live")
    expected = [(a["partition"], a["offset"]) for a in acks]
    data: list[dict] = []
    for client, sub in [*((c, "same") for c in clients), (clients[0], "other")]:
        got = await collect(client, sub, 5)
        assert sorted((e["partition"], e["offset"]) for e in got) == sorted(expected)
        assert {e["sub"] for e in got} == {sub}
        data.append({(e["partition"], e["offset"]): e["data"] for e in got})
    assert all(d == data[0] for d in data)  # the same records, whatever the encoding
    for _ in range(50):  # the counter is bumped after the frames are handed to sockets
        if _deliveries(server) - before == 20:
            break
        await asyncio.sleep(0.05)
    assert _deliveries(server) - before == 20


@pytest.mark.parametrize("ahead", [0, 3])
async def test_frames_in_one_segment_are_handled_in_order(
    ws_gateway: GatewayProcess, make_token: Callable[..., str], ahead: int
) -> None:
    # Publishes are handled as they are read, subscriptions by the session's reader task:
    # a publish behind a subscribe must still wait for it, or a subscription from "end"
    # would start after the records published behind it. In one segment the transport
    # keeps that order (nothing is taken at once behind a queued frame); this fails
    # without that rule.
    client = StalledClient("127.0.0.1", ws_gateway.port, f"/ws?token={make_token('seg')}")
    try:
        assert client.read_frames(1, 5)[0]["op"] == "welcome"
        topic = "user-events"
        before = [
            {"op": "publish", "id": f"b{i}", "topic": topic, "event": event(f"b{i}")}
            for i in range(ahead)
        ]
        after = [
            {"op": "publish", "id": f"a{i}", "topic": topic, "event": event(f"a{i}")}
            for i in range(3)
        ]
        subscribe = {"op": "subscribe", "id": "s", "sub": "seg", "topic": topic}
        client.send_together([*before, subscribe, *after, {"op": "ping", "id": "p"}])
        # Acks, the subscription's answer, the pong, and the three events behind the
        # subscribe; the events of the publishes ahead of it may come too.
        frames = client.read_frames(ahead + 1 + 3 + 1 + 3, 10)
        while sum(f.get("op") == "event" for f in frames) < 3 + ahead:
            more = client.read_frames(1, 1)
            if not more:
                break
            frames += more
    finally:
        client.close()
    ops = [(frame["op"], frame.get("id")) for frame in frames]
    # Every frame is answered, the pong after the subscription's answer.
    assert ops.index(("subscribed", "s")) < ops.index(("pong", "p"))
    mine = [
        frame["data"]["payload"]["action"]
        for frame in frames
        if frame["op"] == "event" and frame["data"]["user_id"] == "seg"
    ]
    # Publishes ahead of the subscribe may land after its start (they were not durable
    # yet when it began); every one behind it must be delivered, in order.
    assert [action for action in mine if action.startswith("a")] == ["a0", "a1", "a2"]
