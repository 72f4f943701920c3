"""Per-session rate limits: a token bucket for publishes and one for errors."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; ``take`` never waits."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens < n:
            self._tokens = tokens
            return False
        self._tokens = tokens - n
        return True
