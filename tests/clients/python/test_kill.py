"""The kill test: SIGKILL the gateway under a publisher and a subscriber, restart it, check.

A publisher streams events with unique ids (many in flight at once) while a subscriber of
the same user follows the topic. Mid-stream the gateway is killed with SIGKILL and a new
one is started on the same port and data directory. The SDK reconnects both clients by
itself. Then: every publish call returned exactly one acknowledgement; the log holds each
event id exactly once, at the acknowledged position; the subscriber received every record
exactly once, in offset order per partition.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
from agentmem_client import Ack, Client, ConnectionState, Event, StateChange
from servers import SECRET

from gateway.auth.tokens import TokenAuthority
from gateway.streamlog.embedded import EmbeddedLog

N = 400
KILL_AT = 130  # acknowledgements before the kill
IN_FLIGHT = 32
PARTITIONS = 16  # of user-events
CLIENT = {"backoff_base": 0.05, "backoff_max": 0.4, "timeout": 30.0}


async def _stored_records(data_dir: Path, organization: str) -> dict[str, list[tuple[int, int]]]:
    """Event id -> the positions holding it, for one organization's user-events records."""
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    async with EmbeddedLog(data_dir / "log.sqlite3") as log:
        for partition in range(PARTITIONS):
            offset = 0
            while records := await log.read("user-events", partition, offset, 1000):
                for record in records:
                    envelope = msgspec.json.decode(record.value)
                    if envelope.get("organization_id") == organization:
                        found[envelope["id"]].append((partition, record.offset))
                offset = records[-1].offset + 1
    return found


async def test_sigkill_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, spawn_gateway: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = await asyncio.to_thread(spawn_gateway, data)
    authority = TokenAuthority(SECRET)

    def token() -> str:  # get_token: a fresh token on every (re)connection
        return authority.mint("killer", "kill-org", ("publish", "subscribe"), 600)

    ids = [f"kill-{i:04d}" for i in range(N)]
    acks: dict[str, list[Ack]] = defaultdict(list)
    failures: list[BaseException] = []
    received: list[Event] = []
    publisher_changes: list[StateChange] = []
    subscriber_changes: list[StateChange] = []
    deliveries_begun = asyncio.Event()
    restarted: list[Any] = []
    at_kill: dict[str, int] = {}

    async def restart() -> None:
        restarted.append(await asyncio.to_thread(spawn_gateway, data, None, server.port))

    async with (
        Client(
            server.ws_url, get_token=token, on_state_change=publisher_changes.append, **CLIENT
        ) as publisher,
        Client(
            server.ws_url,
            get_token=token,
            encoding="msgpack",
            on_state_change=subscriber_changes.append,
            **CLIENT,
        ) as subscriber,
    ):
        sub = await subscriber.subscribe("user-events", from_="end")

        async def consume() -> None:
            async for event in sub:
                received.append(event)
                deliveries_begun.set()
                if len(received) >= N:
                    return

        consumer = asyncio.create_task(consume())
        window = asyncio.Semaphore(IN_FLIGHT)

        async def publish(event_id: str, index: int) -> None:
            if index >= KILL_AT:
                # Acks can run ahead of deliveries by more than KILL_AT records: the rest of
                # the stream waits for the first delivery, so that the kill finds both going.
                await deliveries_begun.wait()
            async with window:
                event = {"type": "user_interaction", "id": event_id, "payload": {"action": "k"}}
                try:
                    ack = await publisher.publish("user-events", event, key=f"key-{index % 40}")
                except BaseException as exc:
                    failures.append(exc)
                    return
                acks[event_id].append(ack)

        async def kill_mid_stream() -> None:
            # Watched from outside the publishes: the acks of one commit can answer every
            # publish in flight, so no publish sees others in flight as its own ack arrives.
            while not (sum(map(len, acks.values())) >= KILL_AT and received and publisher._pending):
                await asyncio.sleep(0.001)
            at_kill.update(pending=len(publisher._pending), received=len(received))
            server.kill()  # SIGKILL, with publishes and deliveries in flight
            await restart()  # a gateway that fails to restart fails the test now

        async with asyncio.timeout(40):
            await asyncio.gather(
                *(publish(event_id, i) for i, event_id in enumerate(ids)),
                consumer,
                kill_mid_stream(),
            )
            # Anything repeated after the last expected record would show up here.
            await asyncio.sleep(0.3)
        assert publisher.state is ConnectionState.CONNECTED
        assert subscriber.state is ConnectionState.CONNECTED

    await asyncio.to_thread(restarted[0].stop)

    # Both clients saw the connection drop (no close frame: 1006) and came back.
    for changes in (publisher_changes, subscriber_changes):
        drops = [c for c in changes if c.state == "disconnected"]
        assert drops and drops[0].code == 1006
        assert [c.state for c in changes][-2:] == ["connected", "closed"]

    # Every publish call resolved once, with an acknowledgement.
    assert not failures, failures[:3]
    assert sorted(acks) == ids
    assert all(len(a) == 1 for a in acks.values())
    positions = {event_id: (a[0].partition, a[0].offset) for event_id, a in acks.items()}
    assert len(set(positions.values())) == N, "two acknowledgements name the same position"

    # The log holds each event id exactly once, where its acknowledgement said.
    stored = await _stored_records(data, "kill-org")
    repeated = {i: p for i, p in stored.items() if len(p) != 1}
    assert not repeated, f"event ids stored more than once: {list(repeated.items())[:3]}"
    assert sorted(stored) == ids
    assert {i: p[0] for i, p in stored.items()} == positions

    # The subscriber received every record exactly once, in offset order per partition.
    counts = Counter(e.data["id"] for e in received)
    assert sorted(counts) == ids and set(counts.values()) == {1}
    by_partition: dict[int, list[int]] = defaultdict(list)
    for event in received:
        by_partition[event.partition].append(event.offset)
        assert positions[event.data["id"]] == (event.partition, event.offset)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)
    duplicates = sum(a[0].duplicate for a in acks.values())
    print(f"at the kill: {at_kill}; re-sent publishes answered as duplicates: {duplicates}")
    assert 0 < at_kill["received"] < N and at_kill["pending"] > 0


async def test_drain_closes_with_going_away_and_the_client_returns(
    tmp_path: Path, spawn_gateway: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = await asyncio.to_thread(spawn_gateway, data)
    token = TokenAuthority(SECRET).mint("u", "o", ("publish", "subscribe"), 600)
    changes: list[StateChange] = []
    async with Client(server.ws_url, token=token, on_state_change=changes.append, **CLIENT) as c:
        await c.publish("user-events", {"type": "user_interaction", "payload": {"action": "a"}})
        await asyncio.to_thread(server.stop)  # SIGTERM: drain, close with 4000
        await asyncio.to_thread(spawn_gateway, data, None, server.port)
        ack = await c.publish(
            "user-events", {"type": "user_interaction", "payload": {"action": "b"}}
        )
        assert ack.offset >= 0
    drops = [c for c in changes if c.state == "disconnected"]
    assert drops and drops[0].code == 4000
