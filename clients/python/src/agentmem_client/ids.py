"""Event ids the client makes up: UUIDv7 (RFC 9562), as 32 hex digits.

An event id the client chose is the gateway's idempotency key: the log remembers it, in
an index, for its dedup window. A v7 id starts with the time in milliseconds, so the ids
of one client grow and new keys land at the end of that index; random (v4) ids land on
random pages of it, which makes every commit write several times more of the index.
"""

from __future__ import annotations

import os
import time

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))


def event_id() -> str:
    """A new UUIDv7: 48 bits of Unix time in milliseconds, then 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return f"{value & _KEEP | _VERSION | _VARIANT:032x}"
