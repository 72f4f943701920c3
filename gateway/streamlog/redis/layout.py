"""How the Redis backend lays a topic out in Redis: key names, stream ids and entry fields.

Every key of one topic carries the topic name as a hash tag (``agentmem:{events}:3``), so a
topic's streams, partition state and idempotency keys share one hash slot and a Lua script
may touch them together.

==========================================  =================================================
key                                         holds
==========================================  =================================================
``<prefix>:topics``                         hash: topic name -> ``TopicSpec`` as JSON
``<prefix>:{<topic>}:<partition>``          stream: the records of one partition
``<prefix>:{<topic>}:state``                hash: ``n<p>`` next offset, ``t<p>`` last
                                            timestamp, ``b<p>`` bytes ever written to ``p``
``<prefix>:{<topic>}:idem:<key>``           string ``<partition>:<offset>:<timestamp>:<nonce>``
                                            (nonce: the produce call that wrote it),
                                            expiring after the dedup window
``<prefix>:{<topic>}:offsets:<consumer>``   hash: partition -> next offset of the consumer
==========================================  =================================================

A record at offset ``o`` has the stream id ``<o>-1``: the id's first part *is* the offset,
so ``XRANGE <o>-0 +`` reads from offset ``o`` and ``XREAD`` after ``<o>-0`` follows from
it. (The second part is 1 because ``0-0`` is not a valid stream id.) Its fields are ``t``
(timestamp, ms), ``c`` (bytes of key and value written to the partition before this
record, for the size cap), ``v`` (value), then ``k`` (key, absent for ``None``) and ``h``
(headers as msgpack, absent when there are none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.streamlog.interface import Headers, Record

_headers_encoder = msgspec.msgpack.Encoder()
_headers_decoder = msgspec.msgpack.Decoder(tuple[tuple[str, bytes], ...])


class Layout:
    """Key names under one prefix (several deployments may share a Redis database)."""

    __slots__ = ("prefix", "topics")

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(
                f"Redis key prefix {prefix!r} must be non-empty and contain no braces "
                "(braces would change the keys' hash slot); use e.g. 'agentmem'."
            )
        self.prefix = prefix
        self.topics = f"{prefix}:topics"

    def stream(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:{{{topic}}}:{partition}"

    def state(self, topic: str) -> str:
        return f"{self.prefix}:{{{topic}}}:state"

    def idempotency(self, topic: str, key: str) -> str:
        return f"{self.prefix}:{{{topic}}}:idem:{key}"

    def consumer(self, topic: str, consumer: str) -> str:
        return f"{self.prefix}:{{{topic}}}:offsets:{consumer}"

    def probe(self) -> str:
        return f"{self.prefix}:ready"


def after(offset: int) -> str:
    """The stream id just before offset ``offset``'s record: read "after" it to start there."""
    return f"{offset}-0"


def offset_of(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[0])


def encode_headers(headers: Headers) -> bytes:
    return _headers_encoder.encode(headers) if headers else b""


def to_record(topic: str, partition: int, stream_id: Any, fields: Mapping[Any, Any]) -> Record:
    """A stream entry (as redis-py returns it, bytes field names) as a ``Record``."""
    headers = fields.get(b"h")
    return Record(
        topic,
        partition,
        offset_of(stream_id),
        int(fields[b"t"]),
        fields.get(b"k"),
        fields[b"v"],
        _headers_decoder.decode(headers) if headers else (),
    )
