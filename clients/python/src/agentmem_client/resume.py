"""Where a subscription resumes after a reconnect (sans-I/O).

The gateway's ``from`` names, per partition, the next offset to deliver. A subscription
remembers:

- the ``from`` it was created with;
- the ``positions`` of the ``subscribed`` answer (where the gateway started);
- for each partition, ``last delivered offset + 1``.

Resuming asks for the later of the last two per partition, so every record arrives once:
none is skipped (no gap) and none is delivered twice (a record below the next offset of its
partition is dropped by :meth:`ResumeState.accept`, should a peer ever send one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias

__all__ = ["FromPosition", "ResumeState"]

FromPosition: TypeAlias = Literal["end", "beginning"] | Mapping[int, int]


class ResumeState:
    """The bookkeeping of one subscription's positions."""

    def __init__(self, initial: FromPosition = "end") -> None:
        if isinstance(initial, str):
            if initial not in ("end", "beginning"):
                raise ValueError(f"from_ must be 'end', 'beginning' or a mapping, not {initial!r}")
        else:
            for partition, offset in initial.items():
                if int(partition) < 0 or int(offset) < 0:
                    raise ValueError("partitions and offsets in from_ must be >= 0")
        self.initial: FromPosition = (
            initial if isinstance(initial, str) else {int(p): int(o) for p, o in initial.items()}
        )
        self.next_offsets: dict[int, int] = {}
        """The next offset to deliver, per partition, once known."""
        self.started = False
        """Whether a ``subscribed`` answer has been seen (its positions cover all partitions)."""

    def on_subscribed(self, positions: Mapping[int, int]) -> None:
        """Take the ``positions`` of a ``subscribed`` answer.

        A partition with deliveries keeps its own next offset unless the gateway starts
        later (records older than the oldest stored one are gone).
        """
        for partition, offset in positions.items():
            current = self.next_offsets.get(partition)
            self.next_offsets[partition] = offset if current is None else max(current, offset)
        self.started = True

    def is_new(self, partition: int, offset: int) -> bool:
        """Whether a record at ``partition``/``offset`` has not been delivered yet."""
        current = self.next_offsets.get(partition)
        return current is None or offset >= current

    def delivered(self, partition: int, offset: int) -> None:
        """Record that the record at ``partition``/``offset`` was handed over."""
        self.next_offsets[partition] = offset + 1

    def accept(self, partition: int, offset: int) -> bool:
        """Record a delivery; ``False`` if it repeats one (drop it), ``True`` otherwise."""
        if not self.is_new(partition, offset):
            return False
        self.delivered(partition, offset)
        return True

    def resume_from(self) -> Literal["end", "beginning"] | dict[int, int]:
        """The ``from`` of the next ``subscribe`` of this subscription."""
        if self.started:
            return dict(self.next_offsets)
        if isinstance(self.initial, str):
            if self.initial == "beginning":
                # Deliveries before ``subscribed`` (not expected): replaying from the
                # beginning is safe, ``accept`` drops what was delivered already.
                return "beginning"
            if not self.next_offsets:
                return "end"
            return dict(self.next_offsets)
        merged = dict(self.initial)
        for partition, offset in self.next_offsets.items():
            merged[partition] = max(merged.get(partition, offset), offset)
        return merged
