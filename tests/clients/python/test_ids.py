"""Event ids the SDK makes up are UUIDv7: valid, unique, and ordered by time."""

from __future__ import annotations

import time
import uuid

from agentmem_client import event_id


def test_an_event_id_is_a_uuid7_of_now() -> None:
    before = time.time_ns() // 1_000_000
    made = event_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(hex=made)
    assert len(made) == 32 and made == parsed.hex
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_grow_with_time() -> None:
    first = [event_id() for _ in range(10_000)]
    time.sleep(0.002)
    later = [event_id() for _ in range(10_000)]
    assert len(set(first + later)) == 20_000
    # Within one millisecond the random tail decides; across milliseconds the time does.
    assert max(first) < min(later)
