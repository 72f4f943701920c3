"""Values the SDK hands to callers: acknowledgements, events, states and their changes."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from agentmem_client.errors import AgentMemError, ErrorDetail, ServerError, server_error

__all__ = [
    "Ack",
    "ConnectionState",
    "ErrorResult",
    "Event",
    "StateChange",
    "SubscriptionState",
]


class Ack(msgspec.Struct, frozen=True):
    """A durable event: where the log stored it.

    ``duplicate`` is true when an event with the same envelope ``id`` had been written
    already (a re-send); ``partition``/``offset`` are then those of the original write.
    """

    topic: str
    partition: int
    offset: int
    event_id: str
    duplicate: bool = False


class ErrorResult(msgspec.Struct, frozen=True):
    """An event of a batch the gateway refused (the others were written)."""

    code: str
    message: str
    details: tuple[ErrorDetail, ...] = ()
    temporary: bool = False

    def exception(self) -> ServerError:
        """The error as the exception a single publish would have raised."""
        return server_error(self.code, self.message, self.details, self.temporary)


class Event(msgspec.Struct, frozen=True):
    """One record delivered to a subscription.

    ``data`` is the record value (the stored envelope, as JSON values); a value that is not
    JSON arrives as ``bytes``. ``timestamp`` is in milliseconds since the epoch.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    data: Any


class ConnectionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    """Not connected; a (re)connection attempt is due (the initial state)."""
    CONNECTING = "connecting"
    """Opening a socket and authenticating."""
    CONNECTED = "connected"
    """Authenticated (``welcome`` received); requests flow."""
    CLOSED = "closed"
    """Final: closed by the caller, by a terminal close code, or after giving up."""


class SubscriptionState(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    """Not started yet, or ended (unsubscribed, failed, or the client closed)."""
    SUBSCRIBING = "subscribing"
    """A ``subscribe`` is on its way (first time, or again after a reconnect)."""
    SUBSCRIBED = "subscribed"
    """The gateway answered ``subscribed``; events flow."""


class StateChange(msgspec.Struct, frozen=True):
    """A state transition reported to callbacks.

    ``code`` is the WebSocket close code behind the change when there is one (``None``
    otherwise), ``reason`` a human-readable explanation, and ``error`` the exception that
    caused it, if any.
    """

    state: str
    previous: str
    code: int | None = None
    reason: str = ""
    error: AgentMemError | None = None
