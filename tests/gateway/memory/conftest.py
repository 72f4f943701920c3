"""Fixtures of the memory API tests: real gateway processes with the memory pipeline on.

The servers run ``agentmem-gateway serve`` with the pipeline inside (``serve``), Qdrant in
local mode under the data directory and the default hashed embedder. Tests share one
server and keep apart by using their own organization and user ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from servers import GatewayProcess


class MemoryGateway(GatewayProcess):
    """A gateway process with the memory pipeline on (unless ``extra_env`` says)."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, {"AGENTMEM_MEMORY_PIPELINE": "serve", **(extra_env or {})})

    def start(self, timeout: float = 30.0) -> MemoryGateway:
        super().start(timeout)
        return self


def serve(root: Path, extra_env: dict[str, str] | None = None) -> MemoryGateway:
    root.mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    return MemoryGateway(data, extra_env).start()


@pytest.fixture(scope="session")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryGateway]:
    process = serve(tmp_path_factory.mktemp("memory") / "default")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api(memory_server: MemoryGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=memory_server.url, timeout=15) as http:
        yield http


class Tenant(NamedTuple):
    org: str
    user: str
    mint: Callable[..., str]

    def headers(
        self, *scopes: str, user: str | None = None, org: str | None = None
    ) -> dict[str, str]:
        token = self.mint(
            user=user or self.user, org=org or self.org, scopes=scopes or ("publish", "subscribe")
        )
        return {"Authorization": f"Bearer {token}"}

    def admin(self) -> dict[str, str]:
        return self.headers("admin", user=f"admin-{self.user}")


@pytest.fixture
def tenant(make_token: Callable[..., str]) -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    return Tenant(org=f"org-{suffix}", user=f"user-{suffix}", mint=make_token)


@pytest.fixture
def other(tenant: Tenant) -> Tenant:
    """Another user of the same organization."""
    return tenant._replace(user=f"other-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def create(api: httpx.Client) -> Callable[..., str]:
    """POST a memory (``headers`` plus the body's fields); returns its id."""

    def post(headers: dict[str, str], **body: Any) -> str:
        response = api.post("/api/v1/memories", json=body, headers=headers)
        assert response.status_code == 201, response.text
        memory_id: str = response.json()["data"]["id"]
        return memory_id

    return post


@pytest.fixture
def start_gateway() -> Callable[..., MemoryGateway]:
    """``start_gateway(root, extra_env)``: a memory gateway of the test's own (stop it)."""
    return serve
