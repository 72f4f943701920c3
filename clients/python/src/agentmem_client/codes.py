"""Close codes and error codes of the ``agentmem.v1`` protocol, mirrored from docs/protocol.md.

This module is the single place where the SDK decides whether a closed connection is worth
reconnecting (:func:`is_reconnectable`). It has no I/O.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "ERROR_CODES",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "TEMPORARY_ERROR_CODES",
    "CloseCode",
    "ErrorCode",
    "close_code_name",
    "is_reconnectable",
]

SUBPROTOCOL_JSON: Final = "agentmem.v1.json"
SUBPROTOCOL_MSGPACK: Final = "agentmem.v1.msgpack"


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by the gateway (and the standard ones the SDK meets)."""

    NORMAL = 1000
    """The client closed."""
    GOING_AWAY_RFC = 1001
    """RFC 6455 "going away" (an endpoint is shutting down); not sent by the gateway."""
    PROTOCOL_ERROR = 1002
    """RFC 6455 protocol error; the SDK also reports a failed handshake with it."""
    ABNORMAL = 1006
    """No close frame: the TCP connection dropped (never sent on the wire)."""
    MESSAGE_TOO_BIG = 1009
    """A frame over ``AGENTMEM_WS_MAX_FRAME_BYTES``."""
    INTERNAL_ERROR_RFC = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014

    GOING_AWAY = 4000
    """The gateway is shutting down or restarting (drain)."""
    SLOW_CONSUMER = 4001
    """The session's send queue stayed full too long; resume from the last offsets."""
    NO_PONG = 4002
    """No ``pong`` for two heartbeats."""
    SERVER_ERROR = 4003
    """An unexpected failure in the gateway."""
    AUTH_TIMEOUT = 4004
    """No ``auth`` frame within 10 seconds."""
    TOKEN_EXPIRED = 4005
    """The token expired; reconnect with a fresh one."""
    TOO_MANY_CONNECTIONS = 4006
    """The user has too many sessions already."""

    INVALID_TOKEN = 4500
    """The token is malformed, forged, or names another user on refresh."""
    FORBIDDEN = 4501
    """The token lacks the scope needed for WebSocket sessions."""
    PROTOCOL_VIOLATION = 4502
    """Too many errors within a minute."""


RECONNECT_RANGE: Final = range(4000, 4500)
TERMINAL_RANGE: Final = range(4500, 5000)

# Standard codes that mean "this endpoint is going away or busy, try again": the gateway
# itself sends 4000 when draining, but a proxy or a server framework in front of it may
# use these.
_TRANSIENT_STANDARD_CODES: Final = frozenset(
    {
        CloseCode.GOING_AWAY_RFC,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL_ERROR_RFC,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.BAD_GATEWAY,
    }
)


def is_reconnectable(code: int | None) -> bool:
    """Whether a connection closed with ``code`` should be re-established (with backoff).

    ``None`` means no close frame was received (the connection dropped, was refused, or the
    peer went silent) and is treated like 1006. Codes 4000-4499 reconnect; 4500-4999, 1000
    (the client closed), 1009 (a frame too large: sending it again would fail again) and
    any other code do not.
    """
    if code is None:
        return True
    if code in RECONNECT_RANGE:
        return True
    return code in _TRANSIENT_STANDARD_CODES


def close_code_name(code: int | None) -> str:
    """A short name for a close code (``"going_away"``), ``"close_<n>"`` for unknown ones."""
    if code is None:
        return "abnormal"
    try:
        return CloseCode(code).name.lower().removesuffix("_rfc")
    except ValueError:
        return f"close_{code}"


class ErrorCode(enum.StrEnum):
    """``code`` of an ``error`` frame (and of an error result inside a ``batch_ack``)."""

    INVALID_FRAME = "invalid_frame"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_TOPIC = "unknown_topic"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    LIMIT_EXCEEDED = "limit_exceeded"
    UNAVAILABLE = "unavailable"
    INVALID_OFFSET = "invalid_offset"
    INTERNAL = "internal"


ERROR_CODES: Final = frozenset(ErrorCode)
TEMPORARY_ERROR_CODES: Final = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)
