"""Shared fixtures: real gateway processes on free loopback ports, real data directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import SECRET, GatewayProcess, free_port

__all__ = ["SECRET", "GatewayProcess", "free_port"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def gateway(data_dir: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(data_dir).start()
    yield process
    process.stop()


@pytest.fixture
def make_token() -> object:
    from gateway.auth.tokens import TokenAuthority

    authority = TokenAuthority(SECRET)

    def mint(
        user: str = "u1",
        org: str = "o1",
        scopes: tuple[str, ...] = ("publish", "subscribe"),
        ttl_s: float = 600,
    ) -> str:
        return authority.mint(user, org, scopes, ttl_s)

    return mint
