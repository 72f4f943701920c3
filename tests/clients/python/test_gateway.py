"""The SDK against a real gateway process over real sockets.

Tests share one gateway (``shared_gateway``) and each uses its own tenant, so it sees only
its own records; keys pin a test's records to one partition where order matters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agentmem_client import (
    Ack,
    Client,
    ConnectionState,
    ErrorResult,
    Event,
    Forbidden,
    InvalidEvent,
    InvalidOffset,
    StateChange,
    SubscriptionState,
    Unauthorized,
    UnknownTopic,
)
from servers import SECRET

from gateway.auth.tokens import TokenAuthority

Take = Callable[..., Awaitable[list[Any]]]
MakeEvent = Callable[..., dict[str, Any]]


async def test_publish_is_acknowledged_with_a_readable_position(
    tenant: Any, make_event: MakeEvent
) -> None:
    event = make_event("opened settings")
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        ack = await client.publish("user-events", event, key="alice")
    assert isinstance(ack, Ack) and ack.topic == "user-events" and not ack.duplicate
    assert "id" not in event, "the caller's event is not modified"
    assert len(ack.event_id) == 32  # uuid4 hex, set by the SDK
    page = tenant.read("user-events", ack.partition, ack.offset, limit=1)
    (record,) = page["records"]
    assert record["offset"] == ack.offset and record["key"] == "alice"
    assert record["data"]["id"] == ack.event_id
    assert record["data"]["organization_id"] == tenant.org
    assert record["data"]["payload"]["action"] == "opened settings"


async def test_republishing_an_event_id_is_deduplicated(tenant: Any, make_event: MakeEvent) -> None:
    event = make_event(id=f"fixed-{uuid.uuid4().hex}")
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        first = await client.publish("user-events", event)
        again = await client.publish("user-events", event)
    assert not first.duplicate and again.duplicate
    assert (again.partition, again.offset, again.event_id) == (
        first.partition,
        first.offset,
        event["id"],
    )


async def test_publish_batch_reports_each_event(tenant: Any, make_event: MakeEvent) -> None:
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        results = await client.publish_batch(
            "user-events",
            [
                make_event("one"),
                ("k", make_event("two")),
                {"type": "user_interaction", "payload": {"importance": 7}},
                ("k", make_event("three")),
            ],
        )
    assert [type(r) for r in results] == [Ack, Ack, ErrorResult, Ack]
    error = results[2]
    assert isinstance(error, ErrorResult) and error.code == "invalid_event"
    assert error.details and "events[2]" in error.details[0].path
    assert isinstance(error.exception(), InvalidEvent)
    two, three = results[1], results[3]
    assert isinstance(two, Ack) and isinstance(three, Ack)
    assert two.partition == three.partition and three.offset == two.offset + 1
    records = tenant.read("user-events", two.partition, two.offset)["records"]
    assert [r["data"]["payload"]["action"] for r in records[:2]] == ["two", "three"]


def _action(step: int) -> dict[str, Any]:
    return {"type": "agent_action", "payload": {"agent_id": "a", "action": "act", "step": step}}


async def test_subscribe_from_beginning_end_and_offsets(
    tenant: Any, make_event: MakeEvent, take: Take
) -> None:
    key = f"k-{uuid.uuid4().hex}"
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        acks = [await client.publish("agent-actions", _action(i), key=key) for i in range(3)]
        partition = acks[0].partition
        assert {a.partition for a in acks} == {partition}

        from_start = await client.subscribe("agent-actions", from_="beginning")
        assert from_start.state is SubscriptionState.SUBSCRIBED
        events = await take(from_start, 3)
        assert [e.offset for e in events] == [a.offset for a in acks]
        assert all(isinstance(e, Event) and e.key == key for e in events)
        assert [e.data["payload"]["step"] for e in events] == [0, 1, 2]

        from_end = await client.subscribe("agent-actions")  # "end"
        from_second = await client.subscribe("agent-actions", from_={partition: acks[1].offset})
        # Positions advance as events are buffered, and the replayed events may arrive in
        # the same socket write as the confirmation: the start is checked by what follows.
        assert acks[1].offset <= from_second.positions[partition] <= acks[2].offset + 1
        later = await client.publish("agent-actions", _action(3), key=key)
        assert [e.offset for e in await take(from_end, 1)] == [later.offset]
        assert [e.offset for e in await take(from_second, 2)] == [acks[1].offset, acks[2].offset]
        assert [e.offset for e in await take(from_second, 1)] == [later.offset]
        assert from_second.positions[partition] == later.offset + 1
        for sub in (from_start, from_end, from_second):
            await sub.unsubscribe()
            assert sub.state is SubscriptionState.UNSUBSCRIBED
        assert client.subscriptions == []


async def test_iterating_subscribe_directly_and_as_a_context(
    tenant: Any, make_event: MakeEvent
) -> None:
    changes: list[tuple[str, str]] = []
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        await client.publish("user-events", make_event("a"), key="x")
        received: list[Event] = []
        async for event in client.subscribe("user-events", from_="beginning"):
            received.append(event)
            break
        assert received[0].data["payload"]["action"] == "a"

        async with client.subscribe("user-events", from_="beginning") as sub:
            sub.on_state_change(lambda c: changes.append((c.previous, c.state)))
            async for event in sub:
                assert event.data["payload"]["action"] == "a"
                break
        assert sub.state is SubscriptionState.UNSUBSCRIBED
        # Iterating an unsubscribed subscription ends at once.
        assert [e async for e in sub] == []
    assert changes == [("subscribed", "unsubscribed")]


async def test_errors_map_to_typed_exceptions(tenant: Any, make_event: MakeEvent) -> None:
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        with pytest.raises(UnknownTopic) as unknown:
            await client.publish("no-such-topic", make_event())
        assert "user-events" in unknown.value.message  # lists the known topics
        with pytest.raises(InvalidEvent) as invalid:
            await client.publish(
                "user-events", {"type": "user_interaction", "payload": {"importance": 2}}
            )
        assert invalid.value.details and invalid.value.details[0].path.startswith("$.event")
        assert not invalid.value.temporary
        with pytest.raises(InvalidEvent):  # the topic does not accept this type
            await client.publish("agent-actions", make_event())
        with pytest.raises(Forbidden):
            await client.publish("user-events", make_event(organization_id="someone-else"))
        with pytest.raises(UnknownTopic):
            await client.subscribe("no-such-topic")
        with pytest.raises(InvalidOffset):
            await client.subscribe("agent-actions", from_={99: 0})
        # The session goes on after errors.
        assert (await client.publish("user-events", make_event())).offset >= 0
        assert client.state is ConnectionState.CONNECTED

    async with Client(tenant.ws_url, token=tenant.token(("subscribe",))) as reader:
        with pytest.raises(Forbidden):
            await reader.publish("user-events", make_event())


async def test_invalid_token_fails_the_connection(tenant: Any) -> None:
    changes: list[StateChange] = []
    client = Client(tenant.ws_url, token="not-a-jwt", on_state_change=changes.append)
    with pytest.raises(Unauthorized):
        await client.connect()
    assert client.state is ConnectionState.CLOSED
    assert [c.state for c in changes] == ["connecting", "closed"]


async def test_msgpack_encoding(tenant: Any, make_event: MakeEvent, take: Take) -> None:
    async with Client(tenant.ws_url, token=tenant.token(), encoding="msgpack") as client:
        sub = await client.subscribe("user-events")
        assert sub.positions and all(isinstance(p, int) for p in sub.positions)
        ack = await client.publish("user-events", make_event("packed", id="m-1"), key="m")
        results = await client.publish_batch("user-events", [("m", make_event("batched"))])
        (first, second) = await take(sub, 2)
        with pytest.raises(InvalidEvent):
            await client.publish("user-events", {"type": "user_interaction", "payload": {}})
    assert ack.event_id == "m-1" and isinstance(results[0], Ack)
    assert first.offset == ack.offset and first.data["payload"]["action"] == "packed"
    assert second.data["payload"]["action"] == "batched"


async def test_connection_state_callbacks(tenant: Any) -> None:
    changes: list[StateChange] = []
    async with Client(tenant.ws_url, token=tenant.token()) as client:
        client.on_state_change(changes.append)
        assert client.state is ConnectionState.CONNECTED
        assert client.session is not None and client.session.organization_id == tenant.org
        assert client.session.heartbeat_ms
        assert await client.ping() < 5
    assert [(c.previous, c.state, c.code) for c in changes] == [("connected", "closed", 1000)]
    assert client.state is ConnectionState.CLOSED


async def test_token_refresh_keeps_the_session(
    tmp_path: Path, spawn_gateway: Any, make_event: MakeEvent
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = await asyncio.to_thread(spawn_gateway, data, {"AGENTMEM_WS_TOKEN_WARNING_S": "2"})
    authority = TokenAuthority(SECRET)
    calls: list[float] = []

    async def get_token() -> str:
        calls.append(time.monotonic())
        return authority.mint("u1", "o1", ("publish", "subscribe"), 3)

    changes: list[StateChange] = []
    async with Client(server.ws_url, get_token=get_token, on_state_change=changes.append) as c:
        assert c.session is not None
        session_id, first_expiry = c.session.session, c.session.expires_at
        await asyncio.sleep(4.5)  # past the first token's expiry
        await c.publish("user-events", make_event())
        assert c.session.session == session_id
        assert c.session.expires_at is not None and first_expiry is not None
        assert c.session.expires_at > first_expiry
    assert len(calls) >= 2
    assert [c.state for c in changes] == ["connecting", "connected", "closed"]


async def test_readme_example_runs(tenant: Any, capsys: pytest.CaptureFixture[str]) -> None:
    readme = Path(__file__).parents[3] / "clients" / "python" / "README.md"
    code = readme.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('TOKEN = "..."', f"TOKEN = {tenant.token()!r}")
    code = code.replace("ws://127.0.0.1:8080/ws", tenant.ws_url)
    code = code.replace("asyncio.run(main())", "")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(readme), "exec"), namespace)
    await namespace["main"]()
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "importance" in printed[1]
