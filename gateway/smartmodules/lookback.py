"""Look-back: the history a module's ``look_back`` export sees before streaming starts.

As in Fluvio, a module asks for history only through its invocation: ``last`` records,
or records younger than ``age_ms`` (optionally only among the last ``last``). The
engine passes the request to ``init`` and selects the records; the caller reads them
from the log, since only it knows where the stream starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.streamlog.interface import Record


class LookBack(msgspec.Struct, frozen=True):
    last: int = 0
    """The last N records before the start (with ``age_ms``: only among those)."""
    age_ms: int | None = None
    """Only records whose timestamp is at most this old."""

    def __post_init__(self) -> None:
        if self.last < 0 or (self.age_ms is not None and self.age_ms < 0):
            raise ValueError("look-back last and age_ms must not be negative")
        if self.last == 0 and self.age_ms is None:
            raise ValueError("a look-back needs last > 0 or an age_ms")

    def select(self, history: Sequence[Record], now_ms: int) -> list[Record]:
        """The records of ``history`` (oldest first) this look-back asks for."""
        chosen = list(history[-self.last :]) if self.last > 0 else list(history)
        if self.age_ms is not None:
            oldest = now_ms - self.age_ms
            chosen = [r for r in chosen if r.timestamp >= oldest]
        return chosen


class HistoryNeed(msgspec.Struct, frozen=True):
    """What a caller must read so that every look-back of a chain finds its records:
    the last ``last`` records before the start, plus every record younger than
    ``age_ms`` (when set)."""

    last: int = 0
    age_ms: int | None = None


def history_needed(requests: Sequence[LookBack]) -> HistoryNeed | None:
    if not requests:
        return None
    last = max((r.last for r in requests), default=0)
    # Age-only requests select by age alone; requests with a count are covered by it.
    ages = [r.age_ms for r in requests if r.last == 0 and r.age_ms is not None]
    return HistoryNeed(last=last, age_ms=max(ages) if ages else None)
