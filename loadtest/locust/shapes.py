"""Load shape presets: ``steady``, ``ramp`` and ``spike``.

Each shape reads locust's ``--users`` (peak user count), ``--spawn-rate`` and ``--run-time``
(``use_common_options``), and ends the test at the run time.

| shape | users over the run |
| --- | --- |
| ``steady`` | ``--users`` all along (started at ``--spawn-rate``) |
| ``ramp`` | five equal steps up to ``--users`` over the first 80 % of the run, then held |
| ``spike`` | a quarter of ``--users``; from 40 % to 60 % of the run all ``--users`` (started within about a second); then back to the quarter |

``locustfile.py`` exposes the one named by ``$AGENTMEM_LOADTEST_SHAPE`` (locust picks up the
shape classes found in a locustfile); ``run.py --shape`` sets it.
"""

from __future__ import annotations

import math
from typing import ClassVar

from locust import LoadTestShape

DEFAULT_USERS = 10
DEFAULT_DURATION_S = 60.0


class PresetShape(LoadTestShape):
    abstract: ClassVar[bool] = True
    use_common_options: ClassVar[bool] = True

    def _option(self, name: str) -> float | None:
        runner = self.runner
        options = getattr(getattr(runner, "environment", None), "parsed_options", None)
        value = getattr(options, name, None)
        return None if value is None else float(value)

    @property
    def users(self) -> int:
        return max(1, int(self._option("num_users") or DEFAULT_USERS))

    @property
    def spawn_rate(self) -> float:
        return self._option("spawn_rate") or max(1.0, self.users / 5)

    @property
    def duration_s(self) -> float:
        return self._option("run_time") or DEFAULT_DURATION_S

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.duration_s:
            return None
        return self.at(elapsed / self.duration_s)

    def at(self, progress: float) -> tuple[int, float]:
        """User count and spawn rate at ``progress`` (0 to 1) of the run."""
        raise NotImplementedError


class SteadyShape(PresetShape):
    def at(self, progress: float) -> tuple[int, float]:
        return self.users, self.spawn_rate


class RampShape(PresetShape):
    steps = 5
    ramp_share = 0.8

    def at(self, progress: float) -> tuple[int, float]:
        step = min(self.steps, int(progress / (self.ramp_share / self.steps)) + 1)
        return max(1, math.ceil(self.users * step / self.steps)), self.spawn_rate


class SpikeShape(PresetShape):
    def at(self, progress: float) -> tuple[int, float]:
        baseline = max(1, self.users // 4)
        if 0.4 <= progress < 0.6:
            return self.users, max(self.spawn_rate, float(self.users))
        return baseline, max(self.spawn_rate, float(self.users))


PRESETS: dict[str, type[PresetShape]] = {
    "steady": SteadyShape,
    "ramp": RampShape,
    "spike": SpikeShape,
}
