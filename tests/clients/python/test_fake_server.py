"""Connection behaviour against a scripted fake server: what a real gateway rarely does on cue.

Heartbeats that stop, close codes of each class, acknowledgements that never come, tokens
about to expire, several URLs, duplicate deliveries after a resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from agentmem_client import (
    Client,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    RateLimited,
    StateChange,
    SubscriptionState,
    Timeout,
    TooLarge,
)
from agentmem_client import frames as fr
from agentmem_client.codes import CloseCode

StartFake = Callable[[list[Any]], Awaitable[Any]]
FAST = {"backoff_base": 0.02, "backoff_max": 0.1, "timeout": 5.0, "connect_timeout": 5.0}


async def _hold(conn: Any) -> None:
    """Answer pings and keep the connection open until the client leaves."""
    try:
        while True:
            frame = await conn.recv(timeout=60)
            if isinstance(frame, fr.Ping):
                await conn.send({"op": "pong", "id": frame.id})
    except Exception:
        return


async def _ack(conn: Any, frame: fr.Publish, offset: int, duplicate: bool = False) -> None:
    await conn.send(
        {
            "op": "ack",
            "id": frame.id,
            "topic": frame.topic,
            "partition": 0,
            "offset": offset,
            "event_id": frame.event["id"],
            "duplicate": duplicate,
        }
    )


async def test_silent_server_is_detected_and_replaced(fake_server: StartFake) -> None:
    async def silent(conn: Any) -> None:
        await conn.welcome(heartbeat_ms=100)
        await conn.ws.wait_closed()  # no ping, nothing, until the client gives up

    async def healthy(conn: Any) -> None:
        # A wider heartbeat here: a loaded machine must not make this session look dead.
        await conn.welcome(heartbeat_ms=400)
        for _ in range(20):  # heartbeats, each answered with a pong
            await conn.send({"op": "ping", "ts": 1})
            assert isinstance(await conn.recv(), fr.Pong)
            await asyncio.sleep(0.05)
        await _hold(conn)

    fake = await fake_server([silent, healthy])
    changes: list[StateChange] = []
    async with Client(fake.url, token="t", on_state_change=changes.append, **FAST) as client:
        started = asyncio.get_running_loop().time()
        while len(fake.connections) < 2:
            await asyncio.sleep(0.02)
        elapsed = asyncio.get_running_loop().time() - started
        assert 0.2 < elapsed < 2.0  # 2.5 x 100 ms of silence, then a reconnect
        await asyncio.sleep(1.2)  # pings keep the second session alive
        assert len(fake.connections) == 2
        assert client.state is ConnectionState.CONNECTED
    disconnect = next(c for c in changes if c.state == "disconnected")
    assert disconnect.code == 1006 and "no frame" in disconnect.reason


async def test_terminal_close_code_fails_pending_calls(fake_server: StartFake) -> None:
    async def reject(conn: Any) -> None:
        await conn.welcome()
        await conn.recv()  # the publish
        await conn.ws.close(4500, "forged token")

    fake = await fake_server([reject])
    changes: list[StateChange] = []
    async with Client(fake.url, token="t", on_state_change=changes.append, **FAST) as client:
        sub = client.subscribe("t")
        with pytest.raises(ConnectionClosed) as closed:
            await client.publish("t", {"type": "x"})
        assert closed.value.close_code == 4500 and not closed.value.reconnectable
        assert closed.value.reason == "forged token" and closed.value.code == "invalid_token"
        assert client.state is ConnectionState.CLOSED
        with pytest.raises(ConnectionClosed):
            await client.publish("t", {"type": "x"})
        with pytest.raises(ConnectionClosed):
            await sub
    assert len(fake.connections) == 1
    assert (changes[-1].state, changes[-1].code) == ("closed", 4500)


@pytest.mark.parametrize("code", [4000, 4003, 1012])
async def test_reconnect_resends_unacknowledged_publishes(
    fake_server: StartFake, code: int
) -> None:
    seen: list[fr.Publish] = []

    async def drop(conn: Any) -> None:
        await conn.welcome()
        frame = await conn.recv()
        seen.append(frame)
        await conn.ws.close(code, "restart")

    async def answer(conn: Any) -> None:
        await conn.welcome()
        frame = await conn.recv()
        seen.append(frame)
        await _ack(conn, frame, offset=7, duplicate=True)
        await _ack(conn, frame, offset=7, duplicate=True)  # a stray repeat is ignored
        await _hold(conn)

    fake = await fake_server([drop, answer])
    changes: list[StateChange] = []
    async with Client(fake.url, token="t", on_state_change=changes.append, **FAST) as client:
        ack = await client.publish("t", {"type": "x"})
    assert ack.offset == 7 and ack.duplicate
    first, second = seen
    assert first.event["id"] == second.event["id"] == ack.event_id
    assert [(c.state, c.code) for c in changes if c.state == "disconnected"] == [
        ("disconnected", code)
    ]


async def test_subscription_resumes_from_the_next_offsets(fake_server: StartFake) -> None:
    subscribes: list[fr.Subscribe] = []

    async def events(conn: Any, sub: str, offsets: list[tuple[int, int]]) -> None:
        for partition, offset in offsets:
            await conn.send(
                {
                    "op": "event",
                    "sub": sub,
                    "topic": "t",
                    "partition": partition,
                    "offset": offset,
                    "timestamp": 1,
                    "key": None,
                    "data": {"n": offset},
                }
            )

    async def first(conn: Any) -> None:
        await conn.welcome()
        frame = await conn.recv()
        subscribes.append(frame)
        await conn.send(
            {"op": "subscribed", "id": frame.id, "sub": frame.sub, "topic": "t",
             "positions": {"0": 0, "1": 5, "2": 9}}
        )  # fmt: skip
        await events(conn, frame.sub, [(0, 0), (0, 1), (1, 5)])
        await conn.ws.close(4001, "slow consumer")

    async def second(conn: Any) -> None:
        await conn.welcome()
        frame = await conn.recv()
        subscribes.append(frame)
        await conn.send(
            {"op": "subscribed", "id": frame.id, "sub": frame.sub, "topic": "t",
             "positions": frame.from_}
        )  # fmt: skip
        # A replay that repeats what was delivered already: dropped by the client.
        await events(conn, frame.sub, [(0, 1), (0, 2), (1, 5), (1, 6), (2, 9)])
        await _hold(conn)

    fake = await fake_server([first, second])
    states: list[tuple[str, int | None]] = []
    async with Client(fake.url, token="t", **FAST) as client:
        sub = await client.subscribe("t", from_="beginning")
        sub.on_state_change(lambda c: states.append((c.state, c.code)))
        received = []
        async with asyncio.timeout(5):
            async for event in sub:
                received.append((event.partition, event.offset))
                if len(received) == 6:
                    break
    assert received == [(0, 0), (0, 1), (1, 5), (0, 2), (1, 6), (2, 9)]
    assert subscribes[0].from_ == "beginning"
    assert subscribes[1].from_ == {"0": 2, "1": 6, "2": 9}
    assert subscribes[1].sub == subscribes[0].sub
    assert states[:2] == [("subscribing", 4001), ("subscribed", None)]
    assert sub.state is SubscriptionState.UNSUBSCRIBED  # the client closed


async def test_call_timeout_and_local_limits(fake_server: StartFake) -> None:
    async def mute(conn: Any) -> None:
        await conn.welcome()
        await _hold(conn)

    fake = await fake_server([mute])
    async with Client(fake.url, token="t", max_frame_bytes=2_000, **FAST) as client:
        with pytest.raises(Timeout) as timeout:
            await client.publish("t", {"type": "x"}, timeout=0.2)
        assert timeout.value.temporary and isinstance(timeout.value, TimeoutError)
        with pytest.raises(Timeout):
            await client.subscribe("t", timeout=0.2)
        with pytest.raises(TooLarge):
            await client.publish("t", {"type": "x", "payload": {"blob": "x" * 3_000}})
        assert client.state is ConnectionState.CONNECTED
        assert client.subscriptions == []


async def test_server_error_frame_is_raised_with_its_fields(fake_server: StartFake) -> None:
    async def limited(conn: Any) -> None:
        await conn.welcome()
        frame = await conn.recv()
        await conn.send(
            {"op": "error", "id": frame.id, "code": "rate_limited", "message": "slow down",
             "temporary": True}
        )  # fmt: skip
        await _hold(conn)

    fake = await fake_server([limited])
    async with Client(fake.url, token="t", **FAST) as client:
        with pytest.raises(RateLimited) as limited_error:
            await client.publish("t", {"type": "x"})
    assert limited_error.value.temporary and limited_error.value.message == "slow down"


async def test_token_expiring_sends_a_fresh_token_on_the_session(fake_server: StartFake) -> None:
    auths: list[str] = []

    async def expiring(conn: Any) -> None:
        auths.append((await conn.welcome()).token)
        await conn.send({"op": "token_expiring", "expires_at": 1})
        refresh = await conn.recv()
        auths.append(refresh.token)
        await conn.send({"op": "welcome", "session": "same", "expires_at": 2**41})
        await _hold(conn)

    tokens = iter(f"token-{i}" for i in range(100))
    fake = await fake_server([expiring])
    async with Client(fake.url, get_token=lambda: next(tokens), **FAST) as client:
        async with asyncio.timeout(5):
            while len(auths) < 2:
                await asyncio.sleep(0.02)
        assert client.state is ConnectionState.CONNECTED
    assert auths == ["token-0", "token-1"]
    assert len(fake.connections) == 1


async def test_urls_are_tried_in_turn(fake_server: StartFake, unused_port: int) -> None:
    async def ok(conn: Any) -> None:
        await conn.welcome()
        await _hold(conn)

    fake = await fake_server([ok])
    dead = f"ws://127.0.0.1:{unused_port}/ws"
    async with Client([dead, fake.url], token="t", **FAST) as client:
        assert client.url == fake.url


async def test_connect_gives_up_after_connect_timeout(unused_port: int) -> None:
    changes: list[StateChange] = []
    client = Client(
        f"ws://127.0.0.1:{unused_port}/ws",
        token="t",
        connect_timeout=0.5,
        backoff_base=0.05,
        backoff_max=0.1,
        on_state_change=changes.append,
    )
    with pytest.raises(ConnectError) as error:
        await client.connect()
    assert error.value.reconnectable and "within 0.5s" in error.value.message
    assert client.state is ConnectionState.CLOSED
    assert [c.state for c in changes[:3]] == ["connecting", "disconnected", "connecting"]


async def test_max_attempts_bounds_reconnects(fake_server: StartFake) -> None:
    async def once(conn: Any) -> None:
        await conn.welcome()
        await conn.ws.close(CloseCode.GOING_AWAY, "bye")

    async def refuse(conn: Any) -> None:
        await conn.ws.close(CloseCode.TOO_MANY_CONNECTIONS, "busy")

    fake = await fake_server([once, refuse])
    client = Client(fake.url, token="t", max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    await client.connect()
    async with asyncio.timeout(5):
        while client.state is not ConnectionState.CLOSED:
            await asyncio.sleep(0.02)
    assert isinstance(client.error, ConnectionClosed)
    assert "gave up" in client.error.message and client.error.close_code == 4006
    assert len(fake.connections) == 3  # the first session, then two attempts
    await client.close()


async def test_a_full_buffer_pauses_reading_without_false_dead_connection(
    fake_server: StartFake,
) -> None:
    async def burst(conn: Any) -> None:
        await conn.welcome(heartbeat_ms=100)
        frame = await conn.recv()
        await conn.send(
            {"op": "subscribed", "id": frame.id, "sub": frame.sub, "topic": "t",
             "positions": {"0": 0}}
        )  # fmt: skip
        for offset in range(6):
            await conn.send(
                {"op": "event", "sub": frame.sub, "topic": "t", "partition": 0,
                 "offset": offset, "timestamp": 1, "key": None, "data": offset}
            )  # fmt: skip
        for _ in range(30):
            await conn.send({"op": "ping", "ts": 1})
            await asyncio.sleep(0.03)
        await _hold(conn)

    fake = await fake_server([burst])
    changes: list[StateChange] = []
    async with Client(fake.url, token="t", max_buffer=1, **FAST) as client:
        client.on_state_change(changes.append)
        sub = await client.subscribe("t")
        await asyncio.sleep(0.6)  # the reader waits on the full buffer longer than 2.5 beats
        offsets = [event.offset async for event in _first(sub, 6)]
        assert offsets == list(range(6))
        await asyncio.sleep(0.3)  # the pings that follow keep the session alive
        assert len(fake.connections) == 1 and client.state is ConnectionState.CONNECTED
    assert [c.state for c in changes] == ["closed"]


async def _first(sub: Any, n: int) -> Any:
    count = 0
    async with asyncio.timeout(5):
        async for event in sub:
            yield event
            count += 1
            if count == n:
                return


async def test_a_server_closing_during_the_handshake_is_retried(
    fake_server: StartFake, unused_port: int
) -> None:
    """A gateway that is shutting down accepts TCP and closes it without an HTTP answer;
    the client retries (here the next URL) instead of giving up."""

    async def ok(conn: Any) -> None:
        await conn.welcome()
        await _hold(conn)

    fake = await fake_server([ok])

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    closing = await asyncio.start_server(hang_up, "127.0.0.1", unused_port)
    try:
        async with Client(
            [f"ws://127.0.0.1:{unused_port}/ws", fake.url], token="t", **FAST
        ) as client:
            assert client.url == fake.url
    finally:
        closing.close()
        await closing.wait_closed()
