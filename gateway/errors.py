"""The exception hierarchy shared by the log, the HTTP API and the WebSocket protocol.

Every error carries a stable ``code`` (documented in ``docs/protocol.md`` and
``docs/http-api.md``), a message that names the problem and the fix, optional ``details``
pointing at the offending input, and whether retrying later may succeed (``temporary``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class ErrorDetail(msgspec.Struct, frozen=True):
    path: str
    """Where in the input, as a JSON path (``$.event.payload.importance``)."""
    problem: str


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code = "internal"
    http_status = 500
    temporary = False

    def __init__(self, message: str, details: Sequence[ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = tuple(details)


class InvalidFrame(GatewayError):
    """The input is not well-formed (not JSON, not an object, wrong encoding)."""

    code = "invalid_frame"
    http_status = 400


class InvalidEvent(GatewayError):
    """The input is well-formed but does not match the schema."""

    code = "invalid_event"
    http_status = 422


class UnknownOp(GatewayError):
    code = "unknown_op"
    http_status = 400


class UnknownSubscription(GatewayError):
    code = "unknown_subscription"
    http_status = 404


class UnknownTopic(GatewayError):
    code = "unknown_topic"
    http_status = 404


class Unauthorized(GatewayError):
    """No token, or a token that is malformed, forged or expired."""

    code = "unauthorized"
    http_status = 401


class Forbidden(GatewayError):
    """A valid token that does not allow this operation."""

    code = "forbidden"
    http_status = 403


class TooLarge(GatewayError):
    code = "too_large"
    http_status = 413


class LimitExceeded(GatewayError):
    code = "limit_exceeded"
    http_status = 429


class RateLimited(GatewayError):
    code = "rate_limited"
    http_status = 429
    temporary = True


class Unavailable(GatewayError):
    """The log cannot take writes now (shutting down, storage failing); retry later."""

    code = "unavailable"
    http_status = 503
    temporary = True


class TopicExists(GatewayError):
    code = "topic_exists"
    http_status = 409


class InvalidOffset(GatewayError):
    code = "invalid_offset"
    http_status = 400
