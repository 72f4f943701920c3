"""Byte layouts of the SmartModule ABI, checked against known encodings."""

from __future__ import annotations

import pytest
from sm_helpers import make_records

from gateway.smartmodules import LookBack, codec
from gateway.smartmodules.batch import Batch, prepare
from gateway.streamlog.interface import Record

APPLE = bytes.fromhex("16 00 00 00 00 0a 61 70 70 6c 65 00")


def test_record_without_key() -> None:
    end, encoded = codec.encode_run([Record("t", 0, 7, 1000, None, b"apple")], 0, 1 << 20)
    assert end == 1
    assert encoded == [APPLE]


def test_record_with_key_and_negative_timestamp_delta() -> None:
    records = [Record("t", 0, 10, 100, None, b"x"), Record("t", 0, 11, 97, b"k1", b"apple")]
    _, encoded = codec.encode_run(records, 0, 1 << 20)
    assert encoded[1] == bytes.fromhex("1c 00 05 02 01 04 6b 31 0a 61 70 70 6c 65 00")


def test_records_block_and_version_25_input() -> None:
    batch = prepare([Record("t", 0, 100, 1763000000000, None, b"apple")]).batches[0]
    assert batch.block == bytes.fromhex("00 00 00 01") + APPLE
    data = (
        codec.input_prefix(batch.base_offset, len(batch.block))
        + batch.block
        + codec.input_suffix(25, batch.base_timestamp)
    )
    assert data == bytes.fromhex(
        "00 00 00 00 00 00 00 64 00 00 00 10 00 00 00 01"
        "16 00 00 00 00 0a 61 70 70 6c 65 00 00 00 01 9a 7a fd 1e 00"
    )


@pytest.mark.parametrize(
    ("version", "suffix"),
    [
        (25, "00 00 01 9a 7a fd 1e 00"),
        (24, "00 00 01 9a 7a fd 1e 00"),
        (23, "00 00 01 9a 7a fd 1e 00"),
        (22, "00 00 00 00 00 00 00 00 00 01 9a 7a fd 1e 00"),
        (21, "00 00 00 00 00 00 00"),
    ],
)
def test_input_trailer_per_version(version: int, suffix: str) -> None:
    assert codec.input_suffix(version, 1763000000000) == bytes.fromhex(suffix)


def test_init_input() -> None:
    assert codec.encode_init({"key": "o"}, None, 25) == bytes.fromhex(
        "00 01 00 03 6b 65 79 00 01 6f 00"
    )
    assert codec.encode_init({}, LookBack(last=5, age_ms=10_000), 25) == bytes.fromhex(
        "00 00 01 00 00 00 00 00 00 00 05 01 00 00 00 00 00 00 00 0a 00 00 00 00"
    )
    # Keys are sent sorted, whatever the mapping's order.
    assert codec.encode_init({"b": "2", "a": "1"}, None, 25).startswith(b"\x00\x02\x00\x01a")


def test_init_rejects_strings_fluvio_cannot_read() -> None:
    with pytest.raises(ValueError, match="32 KiB"):
        codec.encode_init({"k": "x" * 40_000}, None, 25)


def test_varints_stay_correct_beyond_32_bits() -> None:
    # Fluvio's own encoder writes 2**31 as 0x01 (which decodes as -1); ours does not.
    assert codec.varint(2**31) != b"\x01"
    assert codec._varint_at(codec.varint(2**31), 0)[0] == 2**31
    for n in (0, 1, -1, 63, 64, -65, 8191, 8192, -(2**40), 2**62):
        assert codec._varint_at(codec.varint(n), 0) == (n, len(codec.varint(n)))


def _batch(base_offset: int, n: int = 1) -> Batch:
    return prepare(make_records(["."] * n, first_offset=base_offset)).batches[0]


def test_decode_filter_map_output_with_error() -> None:
    raw = bytes.fromhex(
        "00 00 00 01 0e 00 00 00 00 02 31 00 01 00 1d"
        + b"invalid digit found in string".hex()
        + "00 00 00 00 00 00 01 f5 04 00 02 78"
    )
    batch = _batch(500, 2)
    records, pos = codec.decode_records(raw, 0, batch)
    assert [(r.offset, r.value) for r in records] == [(500, b"1")]
    failure, end = codec.decode_failure(raw, pos)
    assert end == len(raw)
    assert failure == codec.RecordFailure(
        "invalid digit found in string", 501, "filter_map", None, b"x"
    )


def test_decode_aggregate_output() -> None:
    raw = bytes.fromhex("00 00 00 01 10 00 00 00 00 04 31 61 00 00 00 00 00 02 31 61")
    records, pos = codec.decode_records(raw, 0, _batch(0))
    failure, pos = codec.decode_failure(raw, pos)
    assert values_of(records) == [b"1a"] and failure is None
    assert codec.decode_accumulator(raw, pos) == b"1a"


def values_of(records: list) -> list[bytes]:  # type: ignore[type-arg]
    return [r.value for r in records]


def test_match_reuses_input_records_and_decodes_changed_ones() -> None:
    records = make_records(["a", "bb", "ccc"], key=b"k")
    batch = prepare(records).batches[0]
    changed = codec.encode_run([Record("events", 0, 1, records[1].timestamp, None, b"XX")], 0, 99)
    raw = b"\x00\x00\x00\x03" + batch.encoded[0] + changed[1][0] + batch.encoded[2] + b"\x00"
    # The changed record was encoded as its own batch (delta 0): it decodes at the base.
    out, pos = codec.match_records(raw, 0, batch)
    assert pos == len(raw) - 1
    assert [(r.offset, r.key, r.value) for r in out] == [
        (0, b"k", b"a"),
        (0, None, b"XX"),
        (2, b"k", b"ccc"),
    ]
    assert out == codec.decode_records(raw, 0, batch)[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00",  # no count
        b"\x00\x00\x00\x02" + APPLE,  # one record missing
        b"\x00\x00\x00\x01" + APPLE[:-3],  # truncated value
        b"\x00\x00\x00\x01" + APPLE[:5] + b"\x07" + APPLE[6:],  # bad key flag
    ],
)
def test_truncated_or_malformed_output_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode_records(raw, 0, _batch(0))
        codec.decode_failure(raw, len(raw))


def test_pseudo_batches_split_on_partition_large_deltas_and_size() -> None:
    records = (
        make_records(["a", "b"], partition=0)
        + make_records(["c"], partition=1)
        + make_records(["d"], partition=1, first_offset=1, first_ts=1_763_000_000_001 + 2**31)
    )
    batches = prepare(records).batches
    assert [(b.partition, b.base_offset, len(b)) for b in batches] == [
        (0, 0, 2),
        (1, 0, 1),
        (1, 1, 1),
    ]
    big = make_records(["x" * 1000] * 10)
    assert [len(b) for b in prepare(big, max_batch_bytes=3100).batches] == [3, 3, 3, 1]
    # A timestamp going backwards within range stays in the batch (negative delta).
    assert len(prepare(make_records(["a", "b"], ts_step=-5)).batches) == 1
