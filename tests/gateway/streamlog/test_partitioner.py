"""Key placement matches Fluvio's default partitioner (vectors from Rust's SipHasher)."""

from __future__ import annotations

import pytest

from gateway.streamlog.partitioner import Partitioner, key_hash, partition_for_key

# Computed with Rust's std::hash::SipHasher::new() over `key.hash(&mut hasher)` for &[u8].
VECTORS = [
    (b"", 16738165381834614119),
    (b"a", 18352538474555156587),
    (b"user-1", 6592127534743276804),
    (b"user-42", 17790027765108192789),
    (b"alice", 18356917687303541),
    (b"org-7/user-3", 13117338218502905208),
    ("ünïcødé".encode(), 13674761520213511611),
    (bytes(range(17)), 15427695861105657013),
    (
        b"a key that is longer than sixty-four bytes to cover several compression rounds!!",
        12265076715927456484,
    ),
]


@pytest.mark.parametrize(("key", "expected"), VECTORS)
def test_hash_matches_rust_siphasher(key: bytes, expected: int) -> None:
    assert key_hash(key) == expected


@pytest.mark.parametrize(
    ("key", "partitions", "expected"),
    [(b"user-1", 16, 4), (b"user-42", 32, 21), (b"org-7/user-3", 8, 0), (b"a", 8, 3)],
)
def test_partition_is_hash_modulo_count(key: bytes, partitions: int, expected: int) -> None:
    assert partition_for_key(key, partitions) == expected
    assert Partitioner(partitions)(key) == expected


def test_keyless_records_go_round_robin() -> None:
    partitioner = Partitioner(3)
    assert [partitioner(None) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_cache_stays_bounded_and_correct() -> None:
    partitioner = Partitioner(16)
    for i in range(Partitioner._CACHE_LIMIT + 10):
        key = b"k%d" % i
        assert partitioner(key) == partition_for_key(key, 16)
    assert len(partitioner._cache) <= Partitioner._CACHE_LIMIT


def test_zero_partitions_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        Partitioner(0)
