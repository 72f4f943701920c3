"""Frames of the ``agentmem.v1`` protocol as msgspec Structs, and their codecs (sans-I/O).

Every frame is an object tagged by ``op``. Fields a peer does not know are ignored when
decoding (msgspec's default), and optional fields left at their default are omitted when
encoding, so older and newer peers interoperate. A server frame with an ``op`` this SDK
does not know decodes to :class:`UnknownFrame` rather than failing.

>>> codec = Codec("json")
>>> codec.encode(Ping(id=1))
'{"op":"ping","id":1}'
>>> codec.decode_server('{"op":"pong","id":1,"extra":true}')
Pong(id=1, ts=None)
"""

from __future__ import annotations

import base64
from typing import Any, Literal, TypeAlias

import msgspec

from agentmem_client.codes import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from agentmem_client.errors import ErrorDetail, ProtocolError

__all__ = [
    "AckFrame",
    "Auth",
    "BatchAckFrame",
    "BatchItem",
    "BatchResult",
    "ClientFrame",
    "Codec",
    "Encoding",
    "ErrorBody",
    "ErrorFrame",
    "EventFrame",
    "Ping",
    "Pong",
    "Publish",
    "PublishBatch",
    "RequestId",
    "ServerFrame",
    "Subscribe",
    "Subscribed",
    "TokenExpiring",
    "UnknownFrame",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
]

RequestId: TypeAlias = int | str
Encoding: TypeAlias = Literal["json", "msgpack"]
FromSpec: TypeAlias = str | dict[str, int]


class _Frame(msgspec.Struct, tag_field="op", omit_defaults=True):
    pass


# -- both directions -----------------------------------------------------------------------


class Ping(_Frame, tag="ping"):
    """Client ping (``id`` echoed in the pong) or server heartbeat (``ts``)."""

    id: RequestId | None = None
    ts: int | None = None


class Pong(_Frame, tag="pong"):
    """Answer to a ping; the client's answer to a heartbeat carries no field."""

    id: RequestId | None = None
    ts: int | None = None


# -- client to server ----------------------------------------------------------------------


class Auth(_Frame, tag="auth"):
    token: str


class Publish(_Frame, tag="publish"):
    id: RequestId
    topic: str
    event: dict[str, Any]
    key: str | None = None


class BatchItem(msgspec.Struct, omit_defaults=True):
    event: dict[str, Any]
    key: str | None = None


class PublishBatch(_Frame, tag="publish_batch"):
    id: RequestId
    topic: str
    events: list[BatchItem]


class Subscribe(_Frame, tag="subscribe"):
    id: RequestId
    sub: str
    topic: str
    from_: FromSpec = msgspec.field(default="end", name="from")
    filters: list[dict[str, Any]] | None = None


class Unsubscribe(_Frame, tag="unsubscribe"):
    id: RequestId
    sub: str


ClientFrame: TypeAlias = Auth | Publish | PublishBatch | Subscribe | Unsubscribe | Ping | Pong

# -- server to client ----------------------------------------------------------------------


class Welcome(_Frame, tag="welcome"):
    """A session is authenticated (also the answer to a token refresh)."""

    session: str = ""
    user_id: str = ""
    organization_id: str = ""
    scopes: list[str] = msgspec.field(default_factory=list)
    expires_at: float | None = None
    """Milliseconds since the epoch."""
    heartbeat_ms: float | None = None


class TokenExpiring(_Frame, tag="token_expiring"):
    expires_at: float | None = None


class AckFrame(_Frame, tag="ack"):
    id: RequestId
    topic: str
    partition: int
    offset: int
    event_id: str
    duplicate: bool = False


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str = ""
    details: list[ErrorDetail] | None = None
    temporary: bool | None = None


class BatchResult(msgspec.Struct, omit_defaults=True):
    """One result of a ``batch_ack``: a position, or ``error``."""

    partition: int | None = None
    offset: int | None = None
    event_id: str | None = None
    duplicate: bool = False
    error: ErrorBody | None = None


class BatchAckFrame(_Frame, tag="batch_ack"):
    id: RequestId
    topic: str
    results: list[BatchResult]


class Subscribed(_Frame, tag="subscribed"):
    sub: str
    topic: str = ""
    positions: dict[int | str, int] = msgspec.field(default_factory=dict)
    """Next offset per partition; keys are strings in JSON (ints are accepted too)."""
    id: RequestId | None = None


class Unsubscribed(_Frame, tag="unsubscribed"):
    sub: str
    id: RequestId | None = None


class EventFrame(_Frame, tag="event"):
    sub: str
    topic: str
    partition: int
    offset: int
    timestamp: int = 0
    key: str | None = None
    data: Any = None
    encoding: str = "json"

    def value(self) -> Any:
        """``data``, with a ``base64`` value decoded to ``bytes``."""
        if self.encoding == "base64" and isinstance(self.data, str):
            return base64.b64decode(self.data)
        return self.data


class ErrorFrame(_Frame, tag="error"):
    code: str
    message: str = ""
    id: RequestId | None = None
    sub: str | None = None
    details: list[ErrorDetail] | None = None
    temporary: bool | None = None


ServerFrame: TypeAlias = (
    Welcome
    | TokenExpiring
    | AckFrame
    | BatchAckFrame
    | Subscribed
    | Unsubscribed
    | EventFrame
    | ErrorFrame
    | Ping
    | Pong
)


class UnknownFrame(msgspec.Struct, frozen=True):
    """A frame with an ``op`` this SDK does not know (from a newer peer); ignored."""

    op: str


class _Head(msgspec.Struct):
    op: str


def _ops(*types: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(str(t.__struct_config__.tag) for t in types)


_SERVER_OPS = _ops(
    Welcome,
    TokenExpiring,
    AckFrame,
    BatchAckFrame,
    Subscribed,
    Unsubscribed,
    EventFrame,
    ErrorFrame,
    Ping,
    Pong,
)
_CLIENT_OPS = _ops(Auth, Publish, PublishBatch, Subscribe, Unsubscribe, Ping, Pong)


class Codec:
    """Encodes and decodes frames in one of the two encodings of the protocol.

    ``json`` frames are text (``str``), ``msgpack`` frames binary (``bytes``). Decoding
    accepts either type. A frame that is not an object with a known ``op`` and its required
    fields raises :class:`~agentmem_client.errors.ProtocolError`; an unknown ``op`` decodes
    to :class:`UnknownFrame`.
    """

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding must be 'json' or 'msgpack', not {encoding!r}")
        self.encoding: Encoding = encoding
        self.binary = encoding == "msgpack"
        self.subprotocol = SUBPROTOCOL_MSGPACK if self.binary else SUBPROTOCOL_JSON
        if self.binary:
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = (
                msgspec.msgpack.Encoder()
            )
            self._server: Any = msgspec.msgpack.Decoder(ServerFrame)
            self._client: Any = msgspec.msgpack.Decoder(ClientFrame)
            self._head: Any = msgspec.msgpack.Decoder(_Head)
        else:
            self._encoder = msgspec.json.Encoder()
            self._server = msgspec.json.Decoder(ServerFrame)
            self._client = msgspec.json.Decoder(ClientFrame)
            self._head = msgspec.json.Decoder(_Head)

    def encode(self, frame: ClientFrame | ServerFrame) -> str | bytes:
        """The frame as it goes on the wire: ``str`` for JSON, ``bytes`` for MessagePack."""
        data = self._encoder.encode(frame)
        return data if self.binary else data.decode()

    def decode_server(self, data: str | bytes) -> ServerFrame | UnknownFrame:
        """A frame received from the gateway."""
        return self._decode(self._server, _SERVER_OPS, data)  # type: ignore[no-any-return]

    def decode_client(self, data: str | bytes) -> ClientFrame | UnknownFrame:
        """A frame sent by a client (for tests and fake servers)."""
        return self._decode(self._client, _CLIENT_OPS, data)  # type: ignore[no-any-return]

    def _decode(self, decoder: Any, ops: frozenset[str], data: str | bytes) -> Any:
        if self.binary and isinstance(data, str):
            raise ProtocolError("a text frame on a MessagePack session")
        try:
            return decoder.decode(data)
        except msgspec.ValidationError as exc:
            try:
                op = self._head.decode(data).op
            except (msgspec.ValidationError, msgspec.DecodeError):
                raise ProtocolError(f"a frame without a valid 'op': {exc}") from None
            if op not in ops:
                return UnknownFrame(op)
            raise ProtocolError(f"an invalid {op!r} frame: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"an undecodable frame: {exc}") from None


def from_spec(positions: str | dict[int, int]) -> FromSpec:
    """The wire form of a ``from`` position: ``"end"``, ``"beginning"`` or string keys."""
    if isinstance(positions, str):
        return positions
    return {str(p): o for p, o in positions.items()}


def int_positions(positions: dict[int | str, int]) -> dict[int, int]:
    """Positions with integer partition keys (JSON sends them as strings)."""
    return {int(p): int(o) for p, o in positions.items()}
