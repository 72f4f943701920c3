"""Fixtures of the Python SDK tests: real gateways, tenants, tokens, a scripted fake server.

Integration tests share one gateway per module (``shared_gateway``); each test uses its own
organization and user (``tenant``), so it only sees its own records. Tests that kill or
reconfigure a gateway start their own with ``spawn_gateway`` (which can restart one on
the same port and data directory).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from agentmem_client import Codec
from servers import SECRET, GatewayProcess, free_port
from websockets.asyncio.server import ServerConnection, serve

from gateway.auth.tokens import TokenAuthority

__all__ = ["SECRET", "FakeServer", "SamePortGateway", "Tenant"]


class SamePortGateway(GatewayProcess):
    """A gateway process that can be restarted on the same port and data directory."""

    def __init__(
        self, data_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        super().__init__(data_dir, extra_env)
        if port is not None:
            self.port = port
            self.url = f"http://127.0.0.1:{port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Tenant:
    """An organization and user of its own, with tokens and HTTP reads for them."""

    gateway: GatewayProcess
    org: str
    user: str
    authority: TokenAuthority = field(default_factory=lambda: TokenAuthority(SECRET))

    def token(
        self,
        scopes: tuple[str, ...] = ("publish", "subscribe"),
        ttl_s: float = 600,
        user: str | None = None,
    ) -> str:
        return self.authority.mint(user or self.user, self.org, scopes, ttl_s)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/ws"

    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> dict[str, Any]:
        """``GET /api/v1/topics/{topic}/records`` as this tenant's admin."""
        response = httpx.get(
            f"{self.gateway.url}/api/v1/topics/{topic}/records",
            params={"partition": partition, "offset": offset, "limit": limit},
            headers={"authorization": f"Bearer {self.token(('subscribe', 'admin'))}"},
            timeout=10,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def new_tenant(gateway: GatewayProcess) -> Tenant:
    suffix = uuid.uuid4().hex[:10]
    return Tenant(gateway, org=f"org-{suffix}", user=f"user-{suffix}")


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with default settings, shared by the tests of a module."""
    data = tmp_path_factory.mktemp("sdk") / "data"
    data.mkdir()
    process = GatewayProcess(data).start()
    yield process
    process.stop()


@pytest.fixture
def tenant(shared_gateway: GatewayProcess) -> Tenant:
    return new_tenant(shared_gateway)


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    """``make_event("clicked", id="e1")``: a ``user_interaction`` envelope."""

    def make(action: str = "clicked", **extra: Any) -> dict[str, Any]:
        return {"type": "user_interaction", "payload": {"action": action}, **extra}

    return make


@pytest.fixture
def spawn_gateway() -> Iterator[Callable[..., SamePortGateway]]:
    """``spawn_gateway(data_dir, extra_env=None, port=None)``: a started gateway process.

    Give the ``port`` of a killed gateway to restart it there. Blocking (run it in a
    thread from async tests); every process is stopped at teardown.
    """
    started: list[SamePortGateway] = []

    def spawn(
        data_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None
    ) -> SamePortGateway:
        process = SamePortGateway(data_dir, extra_env, port=port)
        started.append(process)
        process.start()
        return process

    yield spawn
    for process in started:
        process.stop()


# -- a scripted fake server ------------------------------------------------------------------

Handler = Callable[["FakeConnection"], Awaitable[None]]


class FakeConnection:
    """One client connection to ``FakeServer``: decoded frames in, frames out."""

    def __init__(self, ws: ServerConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.received: list[Any] = []

    async def recv(self, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            frame = self.codec.decode_client(await self.ws.recv())
        self.received.append(frame)
        return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(msgspec.json.encode(frame).decode())

    async def welcome(self, heartbeat_ms: int = 20_000, expires_in_s: float = 600) -> Any:
        """Expect ``auth``, answer ``welcome``; the auth frame."""
        auth = await self.recv()
        await self.send(
            {
                "op": "welcome",
                "session": uuid.uuid4().hex[:8],
                "user_id": "u",
                "organization_id": "o",
                "scopes": ["publish", "subscribe"],
                "expires_at": int((time.time() + expires_in_s) * 1000),
                "heartbeat_ms": heartbeat_ms,
            }
        )
        return auth


class FakeServer:
    """A WebSocket server speaking ``agentmem.v1.json``, each connection run by ``handler``.

    ``handlers`` are used in turn, one per connection (the last one repeats).
    """

    def __init__(self, handlers: list[Handler]) -> None:
        self.handlers = handlers
        self.connections: list[FakeConnection] = []
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    async def _handle(self, ws: ServerConnection) -> None:
        connection = FakeConnection(ws, Codec("json"))
        index = min(len(self.connections), len(self.handlers) - 1)
        self.connections.append(connection)
        await self.handlers[index](connection)


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[[list[Handler]], Awaitable[FakeServer]]]:
    servers: list[Any] = []

    async def start(handlers: list[Handler]) -> FakeServer:
        fake = FakeServer(handlers)
        server = await serve(
            fake._handle, "127.0.0.1", fake.port, subprotocols=["agentmem.v1.json"]
        )
        servers.append(server)
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _take(events: AsyncIterator[Any], n: int, timeout: float = 10.0) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            out.append(event)
            if len(out) == n:
                break
    return out


@pytest.fixture
def take() -> Callable[..., Awaitable[list[Any]]]:
    """``await take(subscription, n)``: the next ``n`` events (within ``timeout`` seconds)."""
    return _take


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    return free_port()
