"""Close codes of the WebSocket protocol (see docs/protocol.md).

4000-4499: the client should reconnect (with backoff); 4500-4999: it should not, until it
fixes what the close reason names.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    GOING_AWAY = 4000
    SLOW_CONSUMER = 4001
    NO_PONG = 4002
    SERVER_ERROR = 4003
    AUTH_TIMEOUT = 4004
    TOKEN_EXPIRED = 4005
    TOO_MANY_CONNECTIONS = 4006
    INVALID_TOKEN = 4500
    FORBIDDEN = 4501
    PROTOCOL_VIOLATION = 4502


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect after a close with ``code``."""
    return 4000 <= code < 4500 or code in (1001, 1006, 1011, 1012, 1013)
