"""The byte layouts exchanged with a SmartModule: records, inputs, outputs, errors.

Everything is big-endian except the fields inside a record, which are zigzag varints.
A record is ``length | attributes i8 | timestamp_delta | offset_delta | key option |
value | header count`` and a records block is a u32 count followed by records.

This is the engine's hot path: every record crosses it twice per call. Hence the
precomputed varints, one ``%`` formatting per record, single-byte fast paths when
decoding, and reusing input records that a filter passed through unchanged instead of
decoding them again.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gateway.smartmodules.abi import KIND_TAGS

if TYPE_CHECKING:
    from gateway.smartmodules.batch import Batch, OutputRecord
    from gateway.smartmodules.lookback import LookBack
    from gateway.streamlog.interface import Record

I32_MIN = -(2**31)
I32_MAX = 2**31 - 1
MAX_STRING_BYTES = 32767
"""Fluvio reads string lengths as i16: a param key or value must stay below 32 KiB."""


class DecodeError(ValueError):
    """Bytes from a module do not follow the layout expected of them."""


def varint(n: int) -> bytes:
    """Zigzag varint of ``n`` (standard 64-bit form).

    Fluvio's own encoder mangles values outside the i32 range, its decoder does not;
    the engine keeps deltas inside that range anyway (see ``batch``).
    """
    u = ((n << 1) ^ (n >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


_TABLE_SIZE = 1 << 13
_VARINTS = [varint(n) for n in range(_TABLE_SIZE)]


def encode_run(records: Sequence[Record], start: int, max_bytes: int) -> tuple[int, list[bytes]]:
    """Encode records from ``start`` on while they can share one pseudo-batch.

    The batch's base offset and timestamp are those of ``records[start]``. Encoding stops
    at a change of topic or partition, at a delta outside the i32 range, or once the
    encoded size would pass about ``max_bytes`` (a batch always takes one record).
    Returns the index of the first record not taken and each taken record's bytes.
    """
    V = _VARINTS
    N = _TABLE_SIZE
    first = records[start]
    topic = first.topic
    partition = first.partition
    base_offset = first.offset
    base_timestamp = first.timestamp
    encoded: list[bytes] = []
    append = encoded.append
    size = 0
    # Every check below is ordered so the common case (small non-negative deltas and
    # lengths) costs one comparison and one table lookup.
    for r in records[start:] if start else records:
        if r.partition != partition or r.topic != topic:
            break
        od = r.offset - base_offset
        if 0 <= od < N:
            ob = V[od]
        elif I32_MIN <= od <= I32_MAX:
            ob = varint(od)
        else:
            break
        td = r.timestamp - base_timestamp
        if 0 <= td < N:
            tb = V[td]
        elif I32_MIN <= td <= I32_MAX:
            tb = varint(td)
        else:
            break
        value = r.value
        vl = len(value)
        vb = V[vl] if vl < N else varint(vl)
        key = r.key
        if key is None:
            # attributes, key flag and header count are the 3 fixed bytes
            bl = 3 + len(tb) + len(ob) + len(vb) + vl
            rb = b"%b\x00%b%b\x00%b%b\x00" % (V[bl] if bl < N else varint(bl), tb, ob, vb, value)
        else:
            kl = len(key)
            kb = V[kl] if kl < N else varint(kl)
            bl = 3 + len(tb) + len(ob) + len(kb) + kl + len(vb) + vl
            rb = b"%b\x00%b%b\x01%b%b%b%b\x00" % (
                V[bl] if bl < N else varint(bl),
                tb,
                ob,
                kb,
                key,
                vb,
                value,
            )
        size += bl
        if size > max_bytes and encoded:
            break
        append(rb)
    return start + len(encoded), encoded


_PREFIX = struct.Struct(">qI")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_EMPTY_LEGACY = b"\x00\x00" + b"\x00" + b"\x00\x00\x00\x00"
"""Version <= 22 trailer: empty params map, no look-back, empty join record."""


def input_prefix(base_offset: int, block_len: int) -> bytes:
    """``base_offset`` and the length of the ``raw_bytes`` that follow it."""
    return _PREFIX.pack(base_offset, block_len)


def input_suffix(version: int, base_timestamp: int) -> bytes:
    """What follows the records block in a ``SmartModuleInput`` of ``version``."""
    if version >= 23:
        return _I64.pack(base_timestamp)
    legacy = _EMPTY_LEGACY if version >= 20 else b"\x00\x00\x00\x00\x00\x00"
    if version == 22:
        return legacy + _I64.pack(base_timestamp)
    return legacy


def accumulator_suffix(accumulator: bytes) -> bytes:
    return _U32.pack(len(accumulator)) + accumulator


def _string(text: str, what: str) -> bytes:
    data = text.encode()
    if len(data) > MAX_STRING_BYTES:
        raise ValueError(
            f"{what} is {len(data)} bytes; Fluvio strings must stay below 32 KiB "
            f"({MAX_STRING_BYTES} bytes)"
        )
    return struct.pack(">H", len(data)) + data


def encode_init(params: Mapping[str, str], look_back: LookBack | None, version: int) -> bytes:
    """``SmartModuleInitInput``: the params map (keys sorted) and the look-back option."""
    out = bytearray(struct.pack(">H", len(params)))
    for name in sorted(params):
        out += _string(name, f"param name {name[:40]!r}")
        out += _string(params[name], f"the value of param {name!r}")
    if version >= 20:
        if look_back is None:
            out.append(0)
        else:
            out += b"\x01" + struct.pack(">Q", look_back.last)
            if version >= 21:
                if look_back.age_ms is None:
                    out.append(0)
                else:
                    secs, ms = divmod(look_back.age_ms, 1000)
                    out += b"\x01" + struct.pack(">QI", secs, ms * 1_000_000)
    return bytes(out)


# -- decoding -------------------------------------------------------------------------


def _varint_at(buf: bytes, pos: int) -> tuple[int, int]:
    u = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        u |= (b & 0x7F) << shift
        if b < 0x80:
            return (u >> 1) ^ -(u & 1), pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def _count_at(buf: bytes, pos: int) -> int:
    if pos + 4 > len(buf):
        raise DecodeError("output ends before its record count")
    n: int = _U32.unpack_from(buf, pos)[0]
    # Fluvio reads the count as i32 and treats anything below 1 as empty.
    return n if n < 0x8000_0000 else 0


def skip_records(buf: bytes, pos: int) -> tuple[int, int]:
    """Walk a records block by the records' length prefixes; returns (end, count)."""
    n = _count_at(buf, pos)
    pos += 4
    size = len(buf)
    try:
        for _ in range(n):
            b = buf[pos]
            if b < 0x80:
                pos += 1 + (b >> 1)
            else:
                length, pos = _varint_at(buf, pos)
                if length < 0:
                    raise DecodeError("negative record length")
                pos += length
            if pos > size:
                raise DecodeError("record runs past the end of the output")
    except IndexError:
        raise DecodeError("output ends inside a record") from None
    return pos, n


def _decode_one(
    buf: bytes, pos: int, batch: Batch, out: list[OutputRecord], make: type[OutputRecord]
) -> int:
    # Fields are read in order, ignoring the length prefix, as Fluvio's decoder does.
    b = buf[pos]
    if b < 0x80:
        pos += 1
    elif buf[pos + 1] < 0x80:
        pos += 2
    else:
        pos = _varint_at(buf, pos)[1]
    pos += 1  # attributes
    b = buf[pos]
    if b < 0x80:
        td = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        td, pos = _varint_at(buf, pos)
    b = buf[pos]
    if b < 0x80:
        od = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        od, pos = _varint_at(buf, pos)
    flag = buf[pos]
    pos += 1
    key: bytes | None
    if flag == 0:
        key = None
    elif flag == 1:
        kl, pos = _varint_at(buf, pos)
        if kl < 0 or pos + kl > len(buf):
            raise DecodeError("record key runs past the end of the output")
        key = buf[pos : pos + kl]
        pos += kl
    else:
        raise DecodeError(f"record key flag is {flag}, not 0 or 1")
    b = buf[pos]
    if b < 0x80:
        vl = b >> 1
        pos += 1
    elif (c := buf[pos + 1]) < 0x80:
        vl = ((b & 0x7F) | (c << 7)) >> 1
        pos += 2
    else:
        vl, pos = _varint_at(buf, pos)
        if vl < 0:
            raise DecodeError("negative value length")
    end = pos + vl
    if end >= len(buf):
        raise DecodeError("record value runs past the end of the output")
    if buf[end] != 0:
        raise DecodeError("record has headers, which SmartModule records never carry")
    out.append(
        make(
            batch.topic,
            batch.partition,
            batch.base_offset + od,
            batch.base_timestamp + td,
            key,
            buf[pos:end],
        )
    )
    return end + 1


def decode_records(buf: bytes, pos: int, batch: Batch) -> tuple[list[OutputRecord], int]:
    """Decode a records block into output records placed at the batch's base."""
    from gateway.smartmodules.batch import OutputRecord

    n = _count_at(buf, pos)
    pos += 4
    out: list[OutputRecord] = []
    try:
        for _ in range(n):
            pos = _decode_one(buf, pos, batch, out, OutputRecord)
    except IndexError:
        raise DecodeError("output ends inside a record") from None
    return out, pos


def match_records(buf: bytes, pos: int, batch: Batch) -> tuple[list[OutputRecord], int]:
    """Like ``decode_records``, for output that mostly repeats input records verbatim.

    A filter copies the records it keeps byte for byte. For each output record the
    offset delta names a candidate input record; if the output holds exactly that
    record's bytes, its fields are reused without decoding (equal bytes mean equal
    deltas, key and value). Anything else is decoded.
    """
    from gateway.smartmodules.batch import OutputRecord

    n = _count_at(buf, pos)
    pos += 4
    encoded = batch.encoded
    records = batch.records
    positions = batch.positions()
    count = len(encoded)
    topic = batch.topic
    partition = batch.partition
    out: list[OutputRecord] = []
    append = out.append
    try:
        for _ in range(n):
            # Skip length, attributes and timestamp delta to read the offset delta.
            if buf[pos] < 0x80:
                p = pos + 2
            elif buf[pos + 1] < 0x80:
                p = pos + 3
            else:
                p = _varint_at(buf, pos)[1] + 1
            if buf[p] < 0x80:
                p += 1
            elif buf[p + 1] < 0x80:
                p += 2
            else:
                p = _varint_at(buf, p)[1]
            b = buf[p]
            if b < 0x80:
                od = (b >> 1) ^ -(b & 1)
            elif (c := buf[p + 1]) < 0x80:
                u = (b & 0x7F) | (c << 7)
                od = (u >> 1) ^ -(u & 1)
            else:
                od = _varint_at(buf, p)[0]
            i = od if positions is None else positions.get(od, -1)
            if 0 <= i < count and buf.startswith(data := encoded[i], pos):
                r = records[i]
                append(OutputRecord(topic, partition, r.offset, r.timestamp, r.key, r.value))
                pos += len(data)
            else:
                pos = _decode_one(buf, pos, batch, out, OutputRecord)
    except IndexError:
        raise DecodeError("output ends inside a record") from None
    return out, pos


class RecordFailure(NamedTuple):
    """A ``SmartModuleTransformRuntimeError`` found in an output."""

    hint: str
    offset: int
    kind: str
    key: bytes | None
    value: bytes


def _string_at(buf: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(buf):
        raise DecodeError("output ends before a string")
    n = struct.unpack_from(">h", buf, pos)[0]
    pos += 2
    if n <= 0:
        return "", pos
    if pos + n > len(buf):
        raise DecodeError("string runs past the end of the output")
    return buf[pos : pos + n].decode(errors="replace"), pos + n


def _record_data_at(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _varint_at(buf, pos)
    if n < 0 or pos + n > len(buf):
        raise DecodeError("record data runs past the end of the output")
    return buf[pos : pos + n], pos + n


def decode_failure(buf: bytes, pos: int) -> tuple[RecordFailure | None, int]:
    """The optional runtime error that follows the successes."""
    try:
        flag = buf[pos]
        pos += 1
        if flag == 0:
            return None, pos
        if flag != 1:
            raise DecodeError(f"error flag is {flag}, not 0 or 1")
        hint, pos = _string_at(buf, pos)
        if pos + 9 > len(buf):
            raise DecodeError("output ends inside the error record")
        offset = _I64.unpack_from(buf, pos)[0]
        kind = KIND_TAGS.get(buf[pos + 8], f"kind {buf[pos + 8]}")
        pos += 9
        key: bytes | None = None
        if buf[pos] == 1:
            key, pos = _record_data_at(buf, pos + 1)
        else:
            pos += 1
        value, pos = _record_data_at(buf, pos)
    except IndexError:
        raise DecodeError("output ends inside the error record") from None
    return RecordFailure(hint, offset, kind, key, value), pos


def decode_accumulator(buf: bytes, pos: int) -> bytes | None:
    """The accumulator that follows an aggregate's output; ``None`` when absent."""
    if pos + 4 > len(buf):
        return None
    n = _count_at(buf, pos)
    if pos + 4 + n > len(buf):
        raise DecodeError("accumulator runs past the end of the output")
    return buf[pos + 4 : pos + 4 + n]


def decode_hint(buf: bytes) -> str:
    """``SmartModuleInitOutput``: the hint of a failed ``init``."""
    try:
        return _string_at(buf, 0)[0]
    except DecodeError:
        return ""


def decode_look_back_failure(buf: bytes) -> tuple[str, int | None]:
    """``SmartModuleLookbackOutput``: (hint, offset) of a failed ``look_back``."""
    try:
        hint, pos = _string_at(buf, 0)
    except DecodeError:
        return "", None
    if pos + 8 > len(buf):
        return hint, None
    offset: int = _I64.unpack_from(buf, pos)[0]
    return hint, offset
