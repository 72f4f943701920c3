"""Frames of the WebSocket protocol and their encodings: pure data, no I/O.

Each direction is one msgspec tagged union on ``op``, decoded in a single pass (the
``event`` of a publish is validated against its payload schema in the same pass). Decoders
are built once per encoding. Event frames, the fan-out hot path, are assembled from bytes
prepared once per record (``EventFrame``) so each subscriber costs one concatenation.
"""

from __future__ import annotations

import base64
import functools
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from gateway.errors import (
    ErrorDetail,
    GatewayError,
    InvalidEvent,
    InvalidFrame,
    UnknownOp,
)
from gateway.schemas.envelope import AnyEvent, error_details
from gateway.schemas.record_view import is_json
from gateway.smartmodules.batch import OutputRecord
from gateway.streamlog.interface import Record

RequestId = int | Annotated[str, Meta(max_length=128)]
SubName = Annotated[str, Meta(min_length=1, max_length=64)]
Encoding = Literal["json", "msgpack"]

SUBPROTOCOLS: dict[str, Encoding] = {
    "agentmem.v1.json": "json",
    "agentmem.v1.msgpack": "msgpack",
}

# -- client to server ------------------------------------------------------------------------


class Auth(Struct, tag="auth", tag_field="op"):
    token: str


class Publish(Struct, tag="publish", tag_field="op", kw_only=True):
    id: RequestId
    topic: str
    event: AnyEvent
    key: Annotated[str, Meta(max_length=1_024)] | None = None


class PublishBatch(Struct, tag="publish_batch", tag_field="op", kw_only=True):
    id: RequestId
    topic: str
    events: list[msgspec.Raw]


class BatchItem(Struct, kw_only=True):
    event: AnyEvent
    key: Annotated[str, Meta(max_length=1_024)] | None = None


class Filter(Struct, kw_only=True):
    smartmodule: Annotated[str, Meta(min_length=1, max_length=128)]
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    aggregate_initial: Annotated[str, Meta(max_length=65_536)] | None = None
    """Initial accumulator of an aggregate module (its state starts there)."""


class Subscribe(Struct, tag="subscribe", tag_field="op", kw_only=True):
    id: RequestId
    sub: SubName
    topic: str
    from_: Literal["end", "beginning"] | dict[str, Annotated[int, Meta(ge=0)]] = msgspec.field(
        default="end", name="from"
    )
    filters: list[Filter] = msgspec.field(default_factory=list)


class Unsubscribe(Struct, tag="unsubscribe", tag_field="op", kw_only=True):
    id: RequestId
    sub: SubName


class Ping(Struct, tag="ping", tag_field="op", kw_only=True):
    id: RequestId | None = None


class Pong(Struct, tag="pong", tag_field="op"):
    pass


ClientFrame = Auth | Publish | PublishBatch | Subscribe | Unsubscribe | Ping | Pong
CLIENT_OPS = ("auth", "publish", "publish_batch", "subscribe", "unsubscribe", "ping", "pong")


class _Probe(Struct):
    """What can be salvaged from a frame that failed to decode, to answer it usefully."""

    op: Any = None
    id: Any = None


# -- server to client ------------------------------------------------------------------------


class Ack(Struct, tag="ack", tag_field="op"):
    id: RequestId
    topic: str
    partition: int
    offset: int
    event_id: str
    duplicate: bool


class ErrorBody(Struct, omit_defaults=True):
    code: str
    message: str
    details: list[ErrorDetail] | None = None
    temporary: bool = False


class BatchResult(Struct):
    partition: int
    offset: int
    event_id: str
    duplicate: bool


class BatchAck(Struct, tag="batch_ack", tag_field="op"):
    id: RequestId
    topic: str
    results: list[BatchResult | dict[str, Any]]


class Subscribed(Struct, tag="subscribed", tag_field="op"):
    id: RequestId
    sub: str
    topic: str
    positions: dict[str, int]


class Unsubscribed(Struct, tag="unsubscribed", tag_field="op"):
    id: RequestId
    sub: str


class Error(Struct, tag="error", tag_field="op", omit_defaults=True):
    code: str
    message: str
    temporary: bool
    id: RequestId | None = None
    sub: str | None = None
    details: list[ErrorDetail] | None = None


class Welcome(Struct, tag="welcome", tag_field="op"):
    session: str
    user_id: str
    organization_id: str
    scopes: list[str]
    expires_at: int
    heartbeat_ms: int


class TokenExpiring(Struct, tag="token_expiring", tag_field="op"):
    expires_at: int


class ServerPing(Struct, tag="ping", tag_field="op"):
    ts: int


class ServerPong(Struct, tag="pong", tag_field="op", omit_defaults=True):
    id: RequestId | None = None


def error_frame(
    error: GatewayError, request_id: RequestId | None = None, sub: str | None = None
) -> Error:
    return Error(
        code=error.code,
        message=error.message,
        temporary=error.temporary,
        id=request_id,
        sub=sub,
        details=list(error.details) or None,
    )


def error_result(error: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = [{"path": d.path, "problem": d.problem} for d in error.details]
    return {"error": body}


# -- codecs ----------------------------------------------------------------------------------


class FrameError(Exception):
    """A client frame could not be decoded; ``error`` is what to answer."""

    def __init__(self, error: GatewayError, request_id: RequestId | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


class Codec:
    """Decoding client frames and encoding server frames in one encoding."""

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self.binary = encoding == "msgpack"
        if encoding == "json":
            self._frames: Any = msgspec.json.Decoder(ClientFrame)
            self._items: Any = msgspec.json.Decoder(BatchItem)
            self._item_list: Any = msgspec.json.Decoder(list[BatchItem])
            self._probe: Any = msgspec.json.Decoder(_Probe)
            self._encode: Any = msgspec.json.Encoder().encode
        else:
            self._frames = msgspec.msgpack.Decoder(ClientFrame)
            self._items = msgspec.msgpack.Decoder(BatchItem)
            self._item_list = msgspec.msgpack.Decoder(list[BatchItem])
            self._probe = msgspec.msgpack.Decoder(_Probe)
            self._encode = msgspec.msgpack.Encoder().encode

    def encode(self, frame: Struct) -> bytes:
        return bytes(self._encode(frame))

    def decode(self, data: bytes | str) -> ClientFrame:
        """Decode one client frame or raise ``FrameError`` with the error to answer."""
        if self.binary and isinstance(data, str):
            # A text frame on a MessagePack session: decoded as its UTF-8 bytes.
            data = data.encode()
        try:
            frame: ClientFrame = self._frames.decode(data)
            return frame
        except msgspec.ValidationError as exc:
            raise self._explain(data, exc) from None
        except msgspec.DecodeError as exc:
            what = "JSON" if self.encoding == "json" else "MessagePack"
            raise FrameError(InvalidFrame(f"The frame is not valid {what}: {exc}."), None) from None

    def decode_items(self, raws: list[msgspec.Raw]) -> list[BatchItem] | None:
        """Every item of a batch in one pass, or None when one of them is invalid (then
        ``decode_item`` per item tells which, and the valid ones still go through)."""
        if self.binary:
            count = len(raws)
            if count < 16:
                header = bytes((0x90 | count,))
            elif count < 65_536:
                header = b"\xdc" + count.to_bytes(2, "big")
            else:
                header = b"\xdd" + count.to_bytes(4, "big")
            data = header + b"".join(raws)
        else:
            data = b"[" + b",".join(raws) + b"]"
        try:
            items: list[BatchItem] = self._item_list.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return items

    def decode_item(self, raw: msgspec.Raw, index: int) -> BatchItem:
        try:
            item: BatchItem = self._items.decode(raw)
            return item
        except msgspec.ValidationError as exc:
            details = error_details(exc, f"$.events[{index}]")
            raise InvalidEvent(
                f"Event {index} does not match its schema: {details[0].problem} at "
                f"{details[0].path}.",
                details,
            ) from None
        except msgspec.DecodeError as exc:
            raise InvalidFrame(f"Event {index} is malformed: {exc}.") from None

    def _explain(self, data: bytes | str, exc: msgspec.ValidationError) -> FrameError:
        try:
            probe = self._probe.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            probe = _Probe()
        request_id = probe.id if isinstance(probe.id, int | str) else None
        if probe.op is None:
            error: GatewayError = InvalidFrame(
                'The frame has no "op"; expected one of ' + ", ".join(CLIENT_OPS) + ".",
                [ErrorDetail(path="$.op", problem="missing")],
            )
        elif probe.op not in CLIENT_OPS:
            error = UnknownOp(
                f"Unknown op {probe.op!r}; expected one of " + ", ".join(CLIENT_OPS) + ".",
                [ErrorDetail(path="$.op", problem="unknown")],
            )
        else:
            details = error_details(exc)
            where = details[0].path
            message = f"{details[0].problem} at {where}"
            if where.startswith("$.event"):
                error = InvalidEvent(
                    f"The event does not match its schema: {message}. See docs/events.md.",
                    details,
                )
            else:
                error = InvalidFrame(
                    f"The {probe.op!r} frame is invalid: {message}. See docs/protocol.md.",
                    details,
                )
        return FrameError(error, request_id)


# -- event frames: the fan-out hot path ------------------------------------------------------

_json = msgspec.json.Encoder()
_any_json = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Encoder()


class EventFrame:
    """The encoded body of one record's ``event`` frame, shared by all its subscribers.

    The last frame built is kept with its prefix: subscriptions of the same name (prefixes
    are interned, see ``json_prefix``) share one ``bytes`` object instead of each joining
    their own."""

    __slots__ = ("_json_tail", "_last", "_msgpack_tail", "record")

    def __init__(self, record: Record | OutputRecord) -> None:
        self.record = record
        self._json_tail: bytes | None = None
        self._msgpack_tail: bytes | None = None
        self._last: tuple[bytes, bytes] | None = None

    def _fields(self) -> tuple[Any, Any, bool]:
        record = self.record
        key: Any = None
        if record.key is not None:
            try:
                key = record.key.decode()
            except UnicodeDecodeError:
                key = base64.b64encode(record.key).decode()
        if is_json(record.value):
            return key, record.value, True
        return key, base64.b64encode(record.value).decode(), False

    def json(self, sub_prefix: bytes) -> bytes:
        """``sub_prefix`` is ``{"op":"event","sub":"<name>"`` (see ``json_prefix``)."""
        last = self._last
        if last is not None and last[0] is sub_prefix:
            return last[1]
        tail = self._json_tail
        if tail is None:
            record = self.record
            key, data, is_json = self._fields()
            tail = b"".join(
                (
                    b',"topic":',
                    _json.encode(record.topic),
                    b',"partition":%d,"offset":%d,"timestamp":%d,"key":'
                    % (record.partition, record.offset, record.timestamp),
                    _json.encode(key),
                    b',"data":',
                    data if is_json else _json.encode(data),
                    b"}" if is_json else b',"encoding":"base64"}',
                )
            )
            self._json_tail = tail
        frame = sub_prefix + tail
        self._last = (sub_prefix, frame)
        return frame

    def msgpack(self, sub_prefix: bytes) -> bytes:
        """``sub_prefix`` comes from ``msgpack_prefix``; maps are assembled pair by pair."""
        last = self._last
        if last is not None and last[0] is sub_prefix:
            return last[1]
        tail = self._msgpack_tail
        if tail is None:
            record = self.record
            key, data, is_json = self._fields()
            pairs: list[tuple[str, Any]] = [
                ("topic", record.topic),
                ("partition", record.partition),
                ("offset", record.offset),
                ("timestamp", record.timestamp),
                ("key", key),
                ("data", _any_json.decode(data) if is_json else data),
            ]
            if not is_json:
                pairs.append(("encoding", "base64"))
            # fixmap header: the two pairs of the prefix (op, sub) plus these.
            header = bytes([0x80 | (len(pairs) + 2)])
            tail = header + b"".join(_msgpack.encode(k) + _msgpack.encode(v) for k, v in pairs)
            self._msgpack_tail = tail
        frame = tail[:1] + sub_prefix + tail[1:]
        self._last = (sub_prefix, frame)
        return frame


@functools.lru_cache(maxsize=4_096)
def json_prefix(sub: str) -> bytes:
    return b'{"op":"event","sub":' + _json.encode(sub)


@functools.lru_cache(maxsize=4_096)
def msgpack_prefix(sub: str) -> bytes:
    # A JSON prefix and a msgpack prefix are never the same object, so one cache slot in
    # ``EventFrame`` serves both encodings.
    return (
        _msgpack.encode("op")
        + _msgpack.encode("event")
        + _msgpack.encode("sub")
        + _msgpack.encode(sub)
    )


_CODECS: dict[str, Codec] = {}


def codec_for(encoding: Encoding) -> Codec:
    """The codec of ``encoding``, built once and shared (decoders and encoders keep no
    per-message state)."""
    codec = _CODECS.get(encoding)
    if codec is None:
        codec = _CODECS[encoding] = Codec(encoding)
    return codec
