"""Reconnect delays: exponential backoff with full jitter (sans-I/O).

The ``n``-th consecutive failed attempt (counting from 0) waits a uniformly random time in
``[0, min(max_delay, base * factor ** n)]`` ("full jitter", see the AWS architecture blog
post *Exponential Backoff And Jitter*): clients cut off together do not come back together.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays between reconnection attempts.

    :param base: the ceiling of the first delay, in seconds.
    :param max_delay: the largest ceiling, in seconds.
    :param max_attempts: how many consecutive failed attempts are allowed before giving up
        (``None``: never give up).
    :param factor: how much the ceiling grows per failed attempt.
    :param rng: a random generator (a seeded one makes delays reproducible in tests).
    """

    def __init__(
        self,
        base: float = 0.1,
        max_delay: float = 10.0,
        max_attempts: int | None = None,
        *,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if base < 0 or max_delay < 0:
            raise ValueError("backoff delays must be >= 0")
        if factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if max_attempts is not None and max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")
        self.base = base
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.factor = factor
        self._rng = rng or random.Random()
        self.attempts = 0
        """Consecutive failed attempts so far."""

    def ceiling(self, attempt: int) -> float:
        """The largest delay after the ``attempt``-th failure (from 0)."""
        # Cap the exponent so huge attempt counts never overflow a float.
        exponent = min(attempt, 1_000)
        try:
            value = self.base * self.factor**exponent
        except OverflowError:
            value = self.max_delay
        return min(self.max_delay, value)

    @property
    def exhausted(self) -> bool:
        """Whether the allowed attempts are used up."""
        return self.max_attempts is not None and self.attempts >= self.max_attempts

    def next_delay(self) -> float | None:
        """Record a failed attempt; the delay before the next one, or ``None`` to give up."""
        if self.exhausted:
            return None
        delay = self._rng.uniform(0, self.ceiling(self.attempts))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Forget failures (after a successful connection)."""
        self.attempts = 0
