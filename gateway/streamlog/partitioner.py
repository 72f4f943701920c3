"""Key-to-partition placement, identical to Fluvio's default partitioner.

Fluvio hashes a key with SipHash-2-4 under an all-zero 128-bit key, over Rust's ``Hash``
encoding of a byte slice (its length as a little-endian u64, then the bytes), and takes
the result modulo the partition count. Using the same function means a key lands on the
same partition on every backend. Records without a key go round-robin.
"""

from __future__ import annotations

import itertools
import struct

from siphash24 import siphash24

_ZERO_KEY = bytes(16)
_LEN = struct.Struct("<Q")


def key_hash(key: bytes) -> int:
    """SipHash-2-4 (zero key) of Rust's ``Hash`` encoding of ``key`` as a byte slice."""
    hasher = siphash24(_LEN.pack(len(key)), key=_ZERO_KEY)
    hasher.update(key)
    # intdigest() is signed; Rust reads the same 64 bits as unsigned.
    return int(hasher.intdigest()) & 0xFFFF_FFFF_FFFF_FFFF


def partition_for_key(key: bytes, partition_count: int) -> int:
    return key_hash(key) % partition_count


class Partitioner:
    """Chooses the partition of a new record for one topic."""

    __slots__ = ("_cache", "_count", "_round_robin")

    _CACHE_LIMIT = 65_536

    def __init__(self, partition_count: int) -> None:
        if partition_count < 1:
            raise ValueError("a topic needs at least one partition")
        self._count = partition_count
        self._round_robin = itertools.cycle(range(partition_count))
        # Keys repeat (user ids, sessions): a bounded memo skips most hashing.
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes | None) -> int:
        if key is None:
            return next(self._round_robin)
        partition = self._cache.get(key)
        if partition is None:
            partition = partition_for_key(key, self._count)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = partition
        return partition
