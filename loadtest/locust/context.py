"""What the simulated users of one locust process share: settings, identities, tokens, ledger.

Identities are namespaced per process (``lt-<run>-u<n>``, ``<run>`` from the start time and
the process id) and spread over organizations ``loadtest-org-<k>``. Each user class hands
out identities round-robin, so the n-th publisher, the n-th subscriber and the n-th HTTP
user share identity ``n mod --identities``: subscribers see the events of the publishers
of their identity (a subscriber receives only its own user's records).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.auth.tokens import TokenAuthority
from loadtest.locust.ledger import DeliveryLedger
from loadtest.secret import find_secret


class ConfigurationError(Exception):
    pass


def add_arguments(parser: Any) -> None:
    """The load test's own options (locust's parser accepts ``env_var``)."""
    group = parser.add_argument_group("agentmem-gateway")
    group.add_argument(
        "--jwt-secret",
        env_var="AGENTMEM_JWT_SECRET",
        default="",
        help="The gateway's token secret (default: $AGENTMEM_JWT_SECRET, else "
        "<$AGENTMEM_DATA_DIR or ./data>/jwt-secret).",
    )
    group.add_argument("--identities", type=int, default=8, help="Simulated end users.")
    group.add_argument("--organizations", type=int, default=3, help="Organizations.")
    group.add_argument(
        "--think-time", type=float, default=0.25,
        help="Mean seconds between two actions of one user (uniform, +-50%%).",
    )  # fmt: skip
    group.add_argument(
        "--publish-window", type=int, default=16,
        help="Unacknowledged publishes a WebSocket publisher may have in flight.",
    )  # fmt: skip
    group.add_argument("--batch-size", type=int, default=50, help="Events per batch.")
    group.add_argument(
        "--batch-window", type=int, default=2, help="Unacknowledged batches in flight."
    )
    group.add_argument(
        "--delivery-timeout", type=float, default=10.0,
        help="Seconds after its ack by which a subscriber must have an event, else it is lost.",
    )  # fmt: skip
    group.add_argument(
        "--request-timeout", type=float, default=30.0,
        help="Seconds to wait for an ack or another answer.",
    )  # fmt: skip
    group.add_argument("--token-ttl", type=float, default=3600.0, help="Token lifetime (s).")


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    user_id: str
    organization_id: str


@dataclass(frozen=True, slots=True)
class Settings:
    secret: str
    identities: int
    organizations: int
    think_time_s: float
    publish_window: int
    batch_size: int
    batch_window: int
    delivery_timeout_s: float
    request_timeout_s: float
    token_ttl_s: float

    @classmethod
    def from_options(cls, options: argparse.Namespace | None) -> Settings:
        def get(name: str, default: Any) -> Any:
            value = getattr(options, name, None)
            return default if value is None else value

        return cls(
            secret=resolve_secret(get("jwt_secret", "")),
            identities=max(1, int(get("identities", 8))),
            organizations=max(1, int(get("organizations", 3))),
            think_time_s=max(0.0, float(get("think_time", 0.25))),
            publish_window=max(1, int(get("publish_window", 16))),
            batch_size=max(1, int(get("batch_size", 50))),
            batch_window=max(1, int(get("batch_window", 2))),
            delivery_timeout_s=max(0.1, float(get("delivery_timeout", 10.0))),
            request_timeout_s=max(1.0, float(get("request_timeout", 30.0))),
            token_ttl_s=max(60.0, float(get("token_ttl", 3600.0))),
        )


def resolve_secret(given: str) -> str:
    """The secret given, else ``$AGENTMEM_JWT_SECRET``, else the data directory's."""
    secret, path = find_secret(given)
    if secret is None:
        raise ConfigurationError(
            "no token secret: pass --jwt-secret or set AGENTMEM_JWT_SECRET to the gateway's "
            f"secret (no {path} to fall back on)"
        )
    return secret


class LoadTest:
    """One per locust process (``LoadTest.of(environment)``)."""

    _instance: LoadTest | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_id = f"{time.strftime('%H%M%S')}-{os.getpid()}"
        self.ledger = DeliveryLedger(retention_s=max(120.0, 4 * settings.delivery_timeout_s))
        self._authority = TokenAuthority(settings.secret)
        self._identities: dict[str, Iterator[int]] = {}
        self._streams = itertools.count()

    @classmethod
    def of(cls, environment: Any) -> LoadTest:
        if cls._instance is None:
            options = getattr(environment, "parsed_options", None)
            cls._instance = cls(Settings.from_options(options))
        return cls._instance

    def identity(self, role: str) -> Identity:
        """The next identity for a user of ``role``, round-robin over ``--identities``."""
        counter = self._identities.setdefault(role, itertools.count())
        index = next(counter) % self.settings.identities
        return Identity(
            index=index,
            user_id=f"lt-{self.run_id}-u{index}",
            organization_id=f"loadtest-org-{index % self.settings.organizations}",
        )

    def stream(self, role: str) -> str:
        """A name for the events of one user instance (part of every event id it sends)."""
        return f"{self.run_id}-{role}{next(self._streams)}"

    def token(self, identity: Identity) -> str:
        return self._authority.mint(
            identity.user_id,
            identity.organization_id,
            ("publish", "subscribe"),
            self.settings.token_ttl_s,
        )
