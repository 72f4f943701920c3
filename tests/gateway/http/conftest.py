"""Fixtures of the HTTP API tests: gateway processes shared by the tests, and clients of them.

The servers are real ``agentmem-gateway serve`` processes. Tests sharing one use their own
organization and user ids (``tenant``) and their own record keys, so they do not see each
other's records; the tests of one session run one at a time, so counters and offsets
compared before and after a request move only because of that request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import GatewayProcess

# Small limits for the server that checks them (the smallest values the settings accept
# for the body and the event).
LIMITS = {
    "AGENTMEM_MAX_BODY_BYTES": "2048",
    "AGENTMEM_MAX_EVENT_BYTES": "512",
    "AGENTMEM_MAX_BATCH_EVENTS": "3",
}


def _serve(root: Path, extra_env: dict[str, str] | None = None) -> GatewayProcess:
    root.mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    return GatewayProcess(data, extra_env=extra_env).start()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with the default settings, shared by the HTTP tests."""
    process = _serve(tmp_path_factory.mktemp("http") / "default")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with small body, event and batch limits (``LIMITS``)."""
    process = _serve(tmp_path_factory.mktemp("http") / "limited", LIMITS)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def limits() -> dict[str, int]:
    return {name: int(value) for name, value in LIMITS.items()}


@pytest.fixture(scope="session")
def client(server: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def limited_client(limited_server: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited_server.url, timeout=10) as http:
        yield http


class Tenant(NamedTuple):
    """A fresh organization and user, with a token factory bound to them."""

    org: str
    user: str
    mint: Callable[..., str]

    def headers(self, *scopes: str, user: str | None = None, org: str | None = None) -> dict:
        token = self.mint(
            user=user or self.user, org=org or self.org, scopes=scopes or ("publish", "subscribe")
        )
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tenant(make_token: Callable[..., str]) -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    return Tenant(org=f"org-{suffix}", user=f"user-{suffix}", mint=make_token)


@pytest.fixture
def unique_key() -> Callable[[], str]:
    return lambda: f"key-{uuid.uuid4().hex}"


def event(kind: str = "user_interaction", **fields: Any) -> dict[str, Any]:
    """A valid envelope of ``kind`` with a minimal payload, updated with ``fields``."""
    payloads: dict[str, dict[str, Any]] = {
        "user_interaction": {"action": "opened settings", "importance": 0.8},
        "chat_message": {"conversation_id": "c1", "role": "user", "content": "hello"},
        "agent_action": {"agent_id": "a1", "action": "search"},
        "log_entry": {"level": "info", "message": "started"},
        "memory_update": {
            "op": "created",
            "memory_id": "m1",
            "memory_type": "core",
            "organization_id": "o",
            "user_id": "u",
        },
    }
    return {"type": kind, "payload": payloads[kind], **fields}


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    return event


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metrics() -> Callable[[httpx.Client], Samples]:
    """Every sample of ``/metrics``: {(name, sorted label pairs): value}."""

    def read(http: httpx.Client) -> Samples:
        response = http.get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    return read


@pytest.fixture
def produced_total(metrics: Callable[[httpx.Client], Samples]) -> Callable[[httpx.Client], float]:
    """Records the gateway has written, over all topics."""

    def total(http: httpx.Client) -> float:
        return sum(
            value
            for (name, _), value in metrics(http).items()
            if name == "agentmem_records_produced_total"
        )

    return total
