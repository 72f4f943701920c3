"""The exception tree of the SDK.

::

    AgentMemError                 code, message, temporary, details
    ├── ConnectionClosed          close_code, reason, reconnectable
    │   └── ConnectError          could not open a session (refused, handshake, timeout)
    ├── ServerError               an ``error`` frame (or an error result in a batch)
    │   ├── InvalidFrame, InvalidEvent, UnknownOp, UnknownTopic, Unauthorized,
    │   │   Forbidden, TooLarge, RateLimited, LimitExceeded, Unavailable,
    │   │   InvalidOffset, InternalError
    ├── Timeout                   a call did not complete in time (also a ``TimeoutError``)
    ├── ProtocolError             the server sent something this SDK cannot understand
    └── TokenError                ``get_token`` failed

``temporary`` says whether retrying the same call later may succeed.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agentmem_client.codes import TEMPORARY_ERROR_CODES, close_code_name, is_reconnectable

__all__ = [
    "AgentMemError",
    "ConnectError",
    "ConnectionClosed",
    "ErrorDetail",
    "Forbidden",
    "InternalError",
    "InvalidEvent",
    "InvalidFrame",
    "InvalidOffset",
    "LimitExceeded",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "Timeout",
    "TokenError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnknownOp",
    "UnknownTopic",
    "server_error",
]


class ErrorDetail(msgspec.Struct, frozen=True):
    """Where an input was wrong: a JSON path (``$.event.payload.importance``) and why."""

    path: str = ""
    problem: str = ""


class AgentMemError(Exception):
    """Base of every error raised by the SDK."""

    code: str = "error"
    """A stable, machine-readable code (an error code of the protocol for server errors)."""
    temporary: bool = False
    """Whether the same call may succeed if retried later."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        temporary: bool | None = None,
        details: Sequence[ErrorDetail] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if temporary is not None:
            self.temporary = temporary
        self.details: tuple[ErrorDetail, ...] = tuple(details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConnectionClosed(AgentMemError):
    """The connection ended and the call cannot complete on it.

    Raised to pending calls and iterators when the client gives up: after a terminal close
    code (4500-4999, 1009, ...), when reconnect attempts are exhausted, or after
    :meth:`Client.close` (``close_code`` 1000). ``code`` is the close code's name
    (``"invalid_token"``); ``close_code`` the number.
    """

    def __init__(self, close_code: int | None, reason: str = "", message: str | None = None):
        self.close_code: int = 1006 if close_code is None else close_code
        self.reason = reason
        self.reconnectable = is_reconnectable(close_code)
        text = message or (
            f"connection closed with {self.close_code} ({close_code_name(close_code)})"
            + (f": {reason}" if reason else "")
        )
        super().__init__(text, code=close_code_name(close_code), temporary=self.reconnectable)


class ConnectError(ConnectionClosed):
    """A session could not be opened: connection refused, failed handshake, no ``welcome``."""


class ServerError(AgentMemError):
    """The gateway answered a request with an ``error`` frame.

    Subclasses are chosen by ``code``; an unknown code (from a newer gateway) is raised as
    ``ServerError`` itself.
    """


class InvalidFrame(ServerError):
    code = "invalid_frame"


class InvalidEvent(ServerError):
    """The event does not match its schema or the topic does not accept its type."""

    code = "invalid_event"


class UnknownOp(ServerError):
    code = "unknown_op"


class UnknownTopic(ServerError):
    code = "unknown_topic"


class Unauthorized(ServerError):
    """No token, or a token that is malformed, forged or expired."""

    code = "unauthorized"


class Forbidden(ServerError):
    """The token lacks a scope, or the event names another organization or user."""

    code = "forbidden"


class TooLarge(ServerError):
    """An event or frame over the gateway's limits (also raised locally before sending)."""

    code = "too_large"


class RateLimited(ServerError):
    code = "rate_limited"
    temporary = True


class LimitExceeded(ServerError):
    code = "limit_exceeded"


class Unavailable(ServerError):
    code = "unavailable"
    temporary = True


class InvalidOffset(ServerError):
    code = "invalid_offset"


class InternalError(ServerError):
    code = "internal"
    temporary = True


_BY_CODE: dict[str, type[ServerError]] = {
    cls.code: cls
    for cls in (
        InvalidFrame,
        InvalidEvent,
        UnknownOp,
        UnknownTopic,
        Unauthorized,
        Forbidden,
        TooLarge,
        RateLimited,
        LimitExceeded,
        Unavailable,
        InvalidOffset,
        InternalError,
    )
}


def server_error(
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    temporary: bool | None = None,
) -> ServerError:
    """The exception for an error code, e.g. ``server_error("unknown_topic", ...)``."""
    cls = _BY_CODE.get(code, ServerError)
    if temporary is None:
        temporary = code in TEMPORARY_ERROR_CODES
    return cls(message, code=code, temporary=temporary, details=details)


class Timeout(AgentMemError, TimeoutError):
    """A call did not complete within its timeout.

    For a publish the event may still have been written: publish it again with the same
    envelope ``id`` (the gateway deduplicates it) to find out.
    """

    code = "timeout"
    temporary = True


class ProtocolError(AgentMemError):
    """The server sent a frame this SDK cannot understand, or broke the protocol."""

    code = "protocol_error"


class TokenError(AgentMemError):
    """``get_token`` raised or returned something other than a non-empty string."""

    code = "token_error"
    temporary = True
