"""Session lifecycle over real sockets: authentication, tokens, heartbeats, limits, drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import jwt
import pytest
import websockets
from servers import SECRET, GatewayProcess
from wsclient import WsClient, event

from gateway.auth.tokens import TokenAuthority


async def test_auth_in_first_frame(
    ws_gateway: GatewayProcess, make_token: Callable[..., str]
) -> None:
    client = await WsClient.connect(ws_gateway.url)
    await client.send({"op": "publish", "id": 1, "topic": "user-events", "event": event()})
    assert (await client.expect("error", id=1))["code"] == "unauthorized"
    await client.send({"op": "ping", "id": 2})
    await client.expect("pong", id=2)
    await client.send({"op": "auth", "token": make_token("first", "o1")})
    welcome = await client.expect("welcome")
    assert welcome["user_id"] == "first" and welcome["organization_id"] == "o1"
    await client.send({"op": "publish", "id": 3, "topic": "user-events", "event": event()})
    await client.expect("ack", id=3)
    await client.close()


def forged() -> str:
    return TokenAuthority("another-secret-0123456789abcdef-0123456789").mint("u1", "o1")


def expired() -> str:
    return jwt.encode({"sub": "u1", "org": "o1", "scopes": ["publish"], "exp": 1}, SECRET, "HS256")


@pytest.mark.parametrize(
    ("token", "close_code", "phrase"),
    [
        (forged, 4500, "signature"),
        (lambda: "not-a-jwt", 4500, "not a valid"),
        (expired, 4005, "expired"),
        (lambda: TokenAuthority(SECRET).mint("u1", "o1", ()), 4501, "neither"),
    ],
)
@pytest.mark.parametrize("how", ["query", "frame"])
async def test_bad_tokens_are_refused_with_documented_codes(
    ws_gateway: GatewayProcess, token: Callable[[], str], close_code: int, phrase: str, how: str
) -> None:
    if how == "query":
        client = await WsClient.connect(ws_gateway.url, token())
    else:
        client = await WsClient.connect(ws_gateway.url)
        await client.send({"op": "auth", "token": token()})
    error = await client.expect("error")
    assert error["code"] in ("unauthorized", "forbidden") and phrase in error["message"]
    assert await client.close_code() == close_code


async def test_token_refresh_keeps_the_session(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_token_warning_s="5")
    client = await WsClient.connect(server.url, make_token("r", "o1", ttl_s=3))
    first = await client.expect("welcome")
    warning = await client.expect("token_expiring", timeout=5)
    assert warning["expires_at"] == first["expires_at"]
    await client.send({"op": "auth", "token": make_token("r", "o1", ttl_s=600)})
    assert (await client.expect("welcome"))["expires_at"] > first["expires_at"]
    await asyncio.sleep(3.5)  # past the first token's expiry
    await client.send({"op": "publish", "id": 1, "topic": "user-events", "event": event()})
    await client.expect("ack", id=1)
    await client.send({"op": "auth", "token": make_token("someone-else", "o1")})
    assert await client.close_code() == 4500


async def test_expired_token_closes_the_session(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway()
    client = await WsClient.connect(server.url, make_token("e", "o1", ttl_s=2))
    await client.expect("welcome")
    assert await client.close_code(timeout=6) == 4005


async def test_heartbeats_and_silent_peers(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_heartbeat_s="0.5", ws_auth_timeout_s="1")
    lively = await WsClient.connect(server.url, make_token("hb", "o1"))
    await lively.expect("welcome")
    # The test client library answers protocol pings; these are application pings.
    silent = await WsClient.connect(server.url, make_token("hb", "o1"))
    await silent.expect("welcome")
    unauthenticated = await WsClient.connect(server.url)
    for _ in range(4):
        ping = await lively.expect("ping", timeout=2)
        assert ping["ts"] > 0
        await lively.send({"op": "pong"})
    assert await silent.close_code(timeout=3) == 4002
    assert await unauthenticated.close_code(timeout=3) == 4004
    await lively.send({"op": "ping", "id": "still"})
    await lively.expect("pong", id="still")


async def test_connections_per_user_limit(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(ws_max_connections_per_user="2")
    token = make_token("many", "o1")
    first = await WsClient.connect(server.url, token)
    second = await WsClient.connect(server.url, token)
    for client in (first, second):
        await client.expect("welcome")
    third = await WsClient.connect(server.url, token)
    assert (await third.expect("error"))["code"] == "limit_exceeded"
    assert await third.close_code() == 4006
    other_user = await WsClient.connect(server.url, make_token("other", "o1"))
    await other_user.expect("welcome")
    await first.close()
    await asyncio.sleep(0.2)
    fourth = await WsClient.connect(server.url, token)
    await fourth.expect("welcome")


async def test_drain_answers_every_publish_in_flight(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway()
    clients = [await WsClient.connect(server.url, make_token(f"d{i}", "o1")) for i in range(5)]
    for client in clients:
        await client.expect("welcome")

    async def publish_until_closed(client: WsClient) -> int:
        sent = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await client.send(
                    {"op": "publish", "id": sent, "topic": "user-events", "event": event()}
                )
                sent += 1
                await asyncio.sleep(0.002)
        return sent

    async def read_until_closed(client: WsClient) -> tuple[set[int], int | None]:
        answered: set[int] = set()
        try:
            while True:
                frame = await client.recv(timeout=15)
                if frame["op"] == "error":
                    assert frame["code"] == "unavailable" and frame["temporary"], frame
                if frame["op"] in ("ack", "error"):
                    answered.add(frame["id"])
        except websockets.ConnectionClosed as closed:
            return answered, closed.rcvd.code if closed.rcvd else None

    writers = [asyncio.create_task(publish_until_closed(c)) for c in clients]
    readers = [asyncio.create_task(read_until_closed(c)) for c in clients]
    await asyncio.sleep(0.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    sent = await asyncio.gather(*writers)
    for n, (answered, code) in enumerate(await asyncio.gather(*readers)):
        assert code == 4000
        # Every publish the server read was answered (in order of reading, so the answered
        # ids are a prefix); publishes it never read were never acknowledged.
        assert answered == set(range(len(answered))), f"client {n} has unanswered publishes"
        assert 0 < len(answered) <= sent[n]
    assert await asyncio.to_thread(server.proc.wait, 15) == 0


async def test_new_connections_during_drain_are_told_to_go_away(
    custom_gateway: Callable[..., GatewayProcess], make_token: Callable[..., str]
) -> None:
    server = custom_gateway(drain_timeout_s="3")
    busy = await WsClient.connect(server.url, make_token("busy", "o1"))
    await busy.expect("welcome")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert await busy.close_code() == 4000
