"""The sans-I/O frame layer: decoding, error classification, event frame assembly."""

from __future__ import annotations

import msgspec
import pytest

from gateway.streamlog.interface import Record
from gateway.ws.codes import CloseCode, should_reconnect
from gateway.ws.frames import (
    Codec,
    EventFrame,
    FrameError,
    Publish,
    Subscribe,
    json_prefix,
    msgpack_prefix,
)

PUBLISH = {
    "op": "publish",
    "id": 7,
    "topic": "user-events",
    "event": {"type": "user_interaction", "payload": {"action": "x"}},
    "unknown_field": "ignored",
}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_decodes_each_encoding(encoding: str) -> None:
    codec = Codec(encoding)  # type: ignore[arg-type]
    data = msgspec.json.encode(PUBLISH) if encoding == "json" else msgspec.msgpack.encode(PUBLISH)
    frame = codec.decode(data)
    assert isinstance(frame, Publish) and frame.id == 7 and frame.event.payload.action == "x"


def test_subscribe_from_forms() -> None:
    codec = Codec("json")
    frame = codec.decode(b'{"op":"subscribe","id":1,"sub":"s","topic":"t","from":{"3":10}}')
    assert isinstance(frame, Subscribe) and frame.from_ == {"3": 10} and frame.filters == []
    frame = codec.decode(b'{"op":"subscribe","id":1,"sub":"s","topic":"t"}')
    assert isinstance(frame, Subscribe) and frame.from_ == "end"


@pytest.mark.parametrize(
    ("data", "code", "request_id", "path"),
    [
        (b"not json", "invalid_frame", None, None),
        (b"[1,2]", "invalid_frame", None, "$.op"),
        (b'{"id": 3}', "invalid_frame", 3, "$.op"),
        (b'{"op": "explode", "id": 4}', "unknown_op", 4, "$.op"),
        (b'{"op": "publish", "id": 5, "topic": "t"}', "invalid_frame", 5, "$"),
        (
            b'{"op":"publish","id":6,"topic":"t","event":{"type":"user_interaction","payload":{}}}',
            "invalid_event",
            6,
            "$.event.payload",
        ),
        (
            b'{"op":"publish","id":"a","topic":"t","event":{"type":"nope","payload":{}}}',
            "invalid_event",
            "a",
            "$.event.type",
        ),
        (b'{"op":"subscribe","id":8,"sub":"","topic":"t"}', "invalid_frame", 8, "$.sub"),
        (
            b'{"op":"subscribe","id":9,"sub":"s","topic":"t","from":{"0":-1}}',
            "invalid_frame",
            9,
            None,
        ),
    ],
)
def test_bad_frames_are_classified(
    data: bytes, code: str, request_id: object, path: str | None
) -> None:
    with pytest.raises(FrameError) as info:
        Codec("json").decode(data)
    assert info.value.error.code == code
    assert info.value.request_id == request_id
    if path is not None:
        assert info.value.error.details[0].path == path


def test_event_frame_json_and_msgpack() -> None:
    record = Record("t", 2, 41, 1000, b"k", b'{"a": [1, 2]}')
    frame = EventFrame(record)
    decoded = msgspec.json.decode(frame.json(json_prefix("s1")))
    assert decoded == {
        "op": "event",
        "sub": "s1",
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "timestamp": 1000,
        "key": "k",
        "data": {"a": [1, 2]},
    }
    assert msgspec.msgpack.decode(frame.msgpack(msgpack_prefix("s2")))["data"] == {"a": [1, 2]}
    # The tail is encoded once and shared by every subscriber.
    assert frame.json(json_prefix("other")).endswith(frame.json(json_prefix("s1"))[27:])


def test_non_json_values_are_base64() -> None:
    frame = EventFrame(Record("t", 0, 0, 0, None, b"\xff\x00binary"))
    decoded = msgspec.json.decode(frame.json(json_prefix("s")))
    assert decoded["encoding"] == "base64" and decoded["data"] == "/wBiaW5hcnk="
    assert decoded["key"] is None


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (CloseCode.GOING_AWAY, True),
        (CloseCode.SLOW_CONSUMER, True),
        (1006, True),
        (CloseCode.INVALID_TOKEN, False),
        (CloseCode.PROTOCOL_VIOLATION, False),
        (1000, False),
        (1009, False),
    ],
)
def test_close_code_ranges(code: int, reconnect: bool) -> None:
    assert should_reconnect(code) is reconnect
