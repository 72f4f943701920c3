"""The benchmark's closed loop against real WebSocket servers (websockets): it counts what
is acknowledged, and fails with a clear error when a server does not answer as the gateway
does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtest.bench.ws_gateway import Endpoint, closed_loop

Handler = Callable[[ServerConnection], Awaitable[None]]
Start = Callable[[Handler], Awaitable[int]]


def ack_for(message: str | bytes) -> str:
    frame = json.loads(message)
    return json.dumps({"op": "ack", "id": frame["id"], "topic": "t", "partition": 0})


@pytest.fixture
async def server() -> AsyncIterator[Start]:
    servers = []

    async def start(handler: Handler) -> int:
        running = await serve(handler, "127.0.0.1", 0)
        servers.append(running)
        return int(running.sockets[0].getsockname()[1])

    yield start
    for running in servers:
        running.close()
        await running.wait_closed()


async def test_every_ack_is_counted_and_timed(server: Start) -> None:
    answered: list[int] = []

    async def handler(connection: ServerConnection) -> None:
        async for message in connection:
            answered.append(json.loads(message)["id"])
            await connection.send(ack_for(message))

    port = await server(handler)
    result = await closed_loop(Endpoint.bare(port), connections=3, window=4, duration=0.3)
    # Every publish sent was answered, and each was answered once.
    assert len(answered) == len(set(answered)) > 12
    assert result["events_per_s"] * 0.3 <= len(answered)
    assert 0 < result["p50_ms"] <= result["p99_ms"]


async def test_publishes_left_unanswered_fail_the_run_with_their_count(
    server: Start,
) -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass  # reads every publish, answers none

    port = await server(handler)
    with pytest.raises(RuntimeError, match=r"8 publishes still unanswered 0\.2 s after the run"):
        await closed_loop(Endpoint.bare(port), 2, 4, 0.1, drain_timeout=0.2)


async def test_a_reply_that_is_not_an_ack_fails_the_run_and_names_it(
    server: Start,
) -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            await connection.send('{"op":"error","code":"unknown_topic"}')

    port = await server(handler)
    with pytest.raises(RuntimeError, match="unknown_topic"):
        await closed_loop(Endpoint.bare(port), 1, 2, 0.1, drain_timeout=5)


async def test_a_server_closing_the_connection_fails_the_run(
    server: Start,
) -> None:
    async def handler(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.close(4001, "slow consumer")

    port = await server(handler)
    with pytest.raises(ConnectionError, match="slow consumer"):
        await closed_loop(Endpoint.bare(port), 1, 2, 0.1, drain_timeout=5)
