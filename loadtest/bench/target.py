"""The gateway a network benchmark measures: one it starts itself, or one already running.

``--target URL`` points a benchmark at a running gateway (``make run`` serves on
``http://127.0.0.1:8080``). Tokens are minted here with the gateway's HS256 secret, found
like ``agentmem-gateway token`` and the locust load test find it: ``--jwt-secret``, else
``$AGENTMEM_JWT_SECRET``, else ``<$AGENTMEM_DATA_DIR or ./data>/jwt-secret`` (the
development secret ``make run`` creates). Each run uses an organization of its own, so a
long-lived gateway's other data never mixes into the figures, and spreads its connections
over several users, so the default per-user connection limit (200) is never reached.
Without ``--target`` the benchmark starts ``agentmem-gateway serve`` on a free port with a
temporary data directory and limits raised out of the way.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.auth.tokens import TokenAuthority
from loadtest.bench.bare import free_port, gateway_environ, stop, wait_listening
from loadtest.secret import find_secret

SECRET = "bench-secret-0123456789abcdef-0123456789"
CONNECTIONS_PER_USER = 100


class TargetError(RuntimeError):
    """The target gateway cannot be measured; the message says why and what to do."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="URL",
        help="measure the gateway running at URL (e.g. http://127.0.0.1:8080 from `make run`) "
        "instead of starting one",
    )
    parser.add_argument(
        "--jwt-secret",
        help="the target's token secret (default $AGENTMEM_JWT_SECRET, else "
        "<$AGENTMEM_DATA_DIR or ./data>/jwt-secret)",
    )


def resolve_secret(given: str | None) -> str:
    secret, path = find_secret(given)
    if secret is None:
        raise TargetError(
            f"no token secret for the target: pass --jwt-secret or set AGENTMEM_JWT_SECRET to "
            f"the gateway's secret (there is no {path}; run from the directory of `make run` "
            "or set AGENTMEM_DATA_DIR to its data directory)"
        )
    return secret


@dataclass
class Gateway:
    """A gateway to measure: where it listens and how to mint tokens it accepts."""

    url: str
    authority: TokenAuthority
    organization: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def token(self, user: str, scopes: tuple[str, ...] = ("publish", "subscribe")) -> str:
        return self.authority.mint(user, self.organization, scopes, 3_600)

    def tokens(
        self, connections: int, role: str, scopes: tuple[str, ...] = ("publish", "subscribe")
    ) -> list[str]:
        """One token per connection, one user per ``CONNECTIONS_PER_USER`` connections."""
        users = [
            self.token(f"{role}-{n}", scopes)
            for n in range(max(1, -(-connections // CONNECTIONS_PER_USER)))
        ]
        return [users[i // CONNECTIONS_PER_USER] for i in range(connections)]

    def ready(self) -> dict[str, Any]:
        try:
            answer = httpx.get(self.url + "/ready", timeout=10)
        except httpx.HTTPError as exc:
            raise TargetError(
                f"no gateway answers at {self.url} ({exc}); start one with `make run`"
            ) from None
        body: dict[str, Any] = answer.json()
        if answer.status_code != 200:
            raise TargetError(f"{self.url}/ready answered {answer.status_code}: {body}")
        return body

    def check_token(self) -> None:
        """Fail early, and clearly, when the target does not accept the minted tokens."""
        answer = httpx.get(
            self.url + "/api/v1/topics",
            headers={"authorization": f"Bearer {self.token('bench-check')}"},
            timeout=10,
        )
        if answer.status_code == 401:
            raise TargetError(
                f"{self.url} refuses tokens signed with this secret ({answer.text.strip()}): "
                "pass the gateway's secret with --jwt-secret or AGENTMEM_JWT_SECRET"
            )
        answer.raise_for_status()

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "started_by_benchmark": self.started_here,
            "organization": self.organization,
            "ready": self.ready(),
        }


def local_env(data_dir: Path, pipeline: str = "off") -> dict[str, str]:
    return {
        **gateway_environ(),
        "AGENTMEM_DATA_DIR": str(data_dir),
        "AGENTMEM_JWT_SECRET": SECRET,
        "AGENTMEM_LOG_LEVEL": "warning",
        "AGENTMEM_WS_PUBLISH_RATE": "10000000",
        "AGENTMEM_WS_MAX_CONNECTIONS_PER_USER": "100000",
        "AGENTMEM_MEMORY_PIPELINE": pipeline,
    }


def start_local(data_dir: Path, pipeline: str = "off") -> Gateway:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=local_env(data_dir, pipeline),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = Gateway(f"http://127.0.0.1:{port}", TokenAuthority(SECRET), proc=proc)
    try:
        wait_listening(port, proc)
        gateway.ready()
    except Exception:
        stop(proc)
        raise
    return gateway


@contextmanager
def gateway(target: str | None, jwt_secret: str | None, pipeline: str = "off") -> Iterator[Gateway]:
    """The target when given, else a gateway started here (memory pipeline ``pipeline``)."""
    if target:
        if urlsplit(target).scheme not in ("http", "https") or not urlsplit(target).hostname:
            raise TargetError(
                f"--target must be a URL such as http://127.0.0.1:8080, not {target!r}"
            )
        if urlsplit(target).scheme == "https":
            raise TargetError("the benchmark generators speak plain HTTP/WebSocket: use http://")
        try:
            remote = Gateway(target.rstrip("/"), TokenAuthority(resolve_secret(jwt_secret)))
            remote.ready()
            remote.check_token()
        except TargetError as exc:
            raise SystemExit(f"error: {exc}") from None
        yield remote
        return
    with tempfile.TemporaryDirectory(prefix="agentmem-bench-") as tmp:
        local = start_local(Path(tmp), pipeline)
        try:
            yield local
        finally:
            assert local.proc is not None
            stop(local.proc)
