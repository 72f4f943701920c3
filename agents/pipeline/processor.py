"""The stream processor: per-user windowed aggregates, rates and anomaly detection.

It reads every record of the consumed topics before any chain (a filter that drops
telemetry for memories must not blind the detector), in event time (the envelope's
``timestamp``, else the record's), so a replay computes the same results.

- **Aggregates**: per organization, user and event type, tumbling windows of
  ``window_s``: event count, importance sum and rate (events per second). Each window is
  upserted into the ``aggregates`` table as it fills.
- **Rate anomalies**: per user and event type, an exponentially weighted mean and
  variance (EWMA, alpha 0.3) of past window counts, empty windows included. Once
  ``anomaly_warmup`` windows were seen, a window whose count reaches
  ``anomaly_min_count`` and lies ``anomaly_z`` deviations above the mean is reported, once
  per window. The deviation is floored at the square root of the mean (event counts are
  roughly Poisson), so a steady low rate does not make every extra event an anomaly.
- **Sensor anomalies**: per organization, sensor and reading, an EWMA (alpha 0.1) of the
  values; after ``sensor_warmup`` readings, a value more than ``sensor_z`` deviations from
  the mean (deviation floored at 1 % of the mean) is reported.

Anomalies become ``log_entry`` envelopes for ``audit-logs``. The baselines and how far
each partition was counted are saved in the same transaction as the consumer offsets,
so after a crash no record is counted twice and none is missed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from agents.config import PipelineConfig
from agents.events import importance, peek, sensor_readings
from gateway.streamlog.interface import Record

RATE_ALPHA = 0.3
SENSOR_ALPHA = 0.1
MAX_EMPTY_WINDOWS = 20
"""Empty windows folded into a baseline at most: after 20 the old mean weighs 0.08 %."""


class RateState(msgspec.Struct, array_like=True):
    window_start: int
    count: int = 0
    importance_sum: float = 0.0
    mean: float = 0.0
    var: float = 0.0
    windows: int = 0
    alerted: bool = False


class SensorState(msgspec.Struct, array_like=True):
    n: int = 0
    mean: float = 0.0
    var: float = 0.0


_rate_decoder = msgspec.msgpack.Decoder(RateState)
_sensor_decoder = msgspec.msgpack.Decoder(SensorState)
_encoder = msgspec.msgpack.Encoder()


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    """``event_rate`` or ``sensor_reading``."""
    organization_id: str
    user_id: str
    subject: str
    """The event type, or ``<sensor_id>/<reading>``."""
    topic: str
    partition: int
    offset: int
    timestamp: int
    message: str
    metadata: dict[str, Any]

    @property
    def id(self) -> str:
        return f"anomaly:{self.kind}:{self.topic}:{self.partition}:{self.offset}:{self.subject}"


class WindowAggregate(msgspec.Struct, frozen=True):
    organization_id: str
    user_id: str
    event_type: str
    window_start: int
    window_ms: int
    count: int
    importance_sum: float
    rate_per_s: float


@dataclass
class Observation:
    anomalies: list[Anomaly] = field(default_factory=list)
    aggregates: list[WindowAggregate] = field(default_factory=list)
    skipped: int = 0
    """Records that are not envelopes with a tenancy (not counted)."""


def _ewma(mean: float, var: float, x: float, alpha: float) -> tuple[float, float]:
    diff = x - mean
    step = alpha * diff
    return mean + step, (1 - alpha) * (var + diff * step)


class StreamProcessor:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.window_ms = int(config.window_s * 1000)
        self._rates: dict[str, RateState] = {}
        self._sensors: dict[str, SensorState] = {}
        self._dirty: set[str] = set()
        self._evicted: set[str] = set()
        self.positions: dict[tuple[str, int], int] = {}
        """Next offset to count per partition; records below it were counted already."""
        self._moved: dict[tuple[str, int], int] = {}

    # -- persistence --------------------------------------------------------------------------

    def load(
        self, states: Sequence[tuple[str, bytes]], positions: dict[tuple[str, int], int]
    ) -> None:
        for key, blob in states:
            if key.startswith("rate\x1f"):
                self._rates[key] = _rate_decoder.decode(blob)
            elif key.startswith("sensor\x1f"):
                self._sensors[key] = _sensor_decoder.decode(blob)
        self.positions = dict(positions)

    def take_changes(
        self,
    ) -> tuple[dict[str, bytes], set[str], dict[tuple[str, int], int]]:
        """States to save, keys to delete and positions that moved since the last call."""
        saved: dict[str, bytes] = {}
        for key in self._dirty:
            state: RateState | SensorState | None = self._rates.get(key)
            if state is None:
                state = self._sensors.get(key)
            if state is not None:
                saved[key] = _encoder.encode(state)
        evicted, moved = self._evicted, self._moved
        self._dirty, self._evicted, self._moved = set(), set(), {}
        return saved, evicted - set(saved), moved

    # -- observing ------------------------------------------------------------------------------

    def observe(self, records: Sequence[Record]) -> Observation:
        result = Observation()
        touched: dict[str, tuple[str, str, str]] = {}
        for record in records:
            position = (record.topic, record.partition)
            if record.offset < self.positions.get(position, 0):
                continue  # counted before a restart
            self.positions[position] = self._moved[position] = record.offset + 1
            event = peek(record.value)
            if event is None or not event.organization_id or not event.user_id or not event.type:
                result.skipped += 1
                continue
            org, user, kind = event.organization_id, event.user_id, event.type
            timestamp = event.timestamp if event.timestamp is not None else record.timestamp
            rate_key = f"rate\x1f{org}\x1f{user}\x1f{kind}"
            self._count(
                rate_key, org, user, kind, timestamp, importance(event.payload), record, result
            )
            touched[rate_key] = (org, user, kind)
            if kind == "sensor_data":
                self._sensor(org, user, event.payload, timestamp, record, result)
        for rate_key, (org, user, kind) in touched.items():
            state = self._rates.get(rate_key)
            if state is not None:
                result.aggregates.append(self._aggregate(org, user, kind, state))
        self._bound()
        return result

    def _aggregate(self, org: str, user: str, kind: str, state: RateState) -> WindowAggregate:
        return WindowAggregate(
            org,
            user,
            kind,
            state.window_start,
            self.window_ms,
            state.count,
            state.importance_sum,
            state.count / (self.window_ms / 1000),
        )

    def _count(
        self,
        key: str,
        org: str,
        user: str,
        kind: str,
        timestamp: int,
        weight: float,
        record: Record,
        result: Observation,
    ) -> None:
        window = timestamp - timestamp % self.window_ms
        state = self._rates.pop(key, None)
        if state is None:
            state = RateState(window)
        elif window > state.window_start:
            # The open window closed: fold it, then any empty windows since, into the baseline.
            result.aggregates.append(self._aggregate(org, user, kind, state))
            mean, var = _ewma(state.mean, state.var, state.count, RATE_ALPHA)
            empty = min((window - state.window_start) // self.window_ms - 1, MAX_EMPTY_WINDOWS)
            for _ in range(empty):
                mean, var = _ewma(mean, var, 0.0, RATE_ALPHA)
            state = RateState(window, 0, 0.0, mean, var, state.windows + 1 + empty)
        # A late event (an earlier window) counts in the open window.
        self._rates[key] = state  # re-inserted last: the dict is in least-recently-seen order
        self._dirty.add(key)
        state.count += 1
        state.importance_sum += weight
        if state.alerted or state.windows < self.config.anomaly_warmup:
            return
        if state.count < self.config.anomaly_min_count:
            return
        deviation = max(math.sqrt(state.var), math.sqrt(max(state.mean, 1.0)))
        z = (state.count - state.mean) / deviation
        if z < self.config.anomaly_z:
            return
        state.alerted = True
        seconds = self.window_ms / 1000
        start = datetime.fromtimestamp(state.window_start / 1000, UTC).isoformat()
        result.anomalies.append(
            Anomaly(
                kind="event_rate",
                organization_id=org,
                user_id=user,
                subject=kind,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp=timestamp,
                message=(
                    f"Event rate anomaly: user {user} sent {state.count} {kind} events in the "
                    f"{seconds:g} s window starting {start}; baseline {state.mean:.1f} "
                    f"(deviation {deviation:.1f}), z = {z:.1f}."
                ),
                metadata={
                    "kind": "event_rate_anomaly",
                    "event_type": kind,
                    "count": state.count,
                    "window_start": state.window_start,
                    "window_ms": self.window_ms,
                    "baseline_mean": round(state.mean, 4),
                    "baseline_deviation": round(deviation, 4),
                    "z": round(z, 2),
                    "source": {
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                    },
                },
            )
        )

    def _sensor(
        self,
        org: str,
        user: str,
        payload: msgspec.Raw,
        timestamp: int,
        record: Record,
        result: Observation,
    ) -> None:
        data = sensor_readings(payload)
        if data is None:
            return
        for name, value in sorted(data.readings.items()):
            if not math.isfinite(value):
                continue
            key = f"sensor\x1f{org}\x1f{data.sensor_id}\x1f{name}"
            state = self._sensors.pop(key, None) or SensorState()
            self._sensors[key] = state
            self._dirty.add(key)
            if state.n >= self.config.sensor_warmup:
                deviation = max(math.sqrt(state.var), abs(state.mean) * 0.01, 1e-9)
                z = (value - state.mean) / deviation
                if abs(z) >= self.config.sensor_z:
                    result.anomalies.append(
                        Anomaly(
                            kind="sensor_reading",
                            organization_id=org,
                            user_id=user,
                            subject=f"{data.sensor_id}/{name}",
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            timestamp=timestamp,
                            message=(
                                f"Sensor anomaly: {data.sensor_id} {name} = {value:g}; "
                                f"baseline {state.mean:.4g} (deviation {deviation:.3g}), "
                                f"z = {z:.1f}."
                            ),
                            metadata={
                                "kind": "sensor_anomaly",
                                "sensor_id": data.sensor_id,
                                "reading": name,
                                "value": value,
                                "baseline_mean": state.mean,
                                "baseline_deviation": deviation,
                                "z": round(z, 2),
                                "source": {
                                    "topic": record.topic,
                                    "partition": record.partition,
                                    "offset": record.offset,
                                },
                            },
                        )
                    )
            state.mean, state.var = (
                (value, 0.0) if state.n == 0 else _ewma(state.mean, state.var, value, SENSOR_ALPHA)
            )
            state.n += 1

    def _bound(self) -> None:
        """Forget the least recently seen baselines beyond ``processor_max_keys``."""
        limit = self.config.processor_max_keys
        for table in (self._rates, self._sensors):
            while len(table) > limit:
                key = next(iter(table))
                del table[key]
                self._dirty.discard(key)
                self._evicted.add(key)

    # -- reading ---------------------------------------------------------------------------------

    def window_counts(self, organization_id: str, user_id: str) -> dict[str, int]:
        """Event counts of the user's open windows, per event type."""
        prefix = f"rate\x1f{organization_id}\x1f{user_id}\x1f"
        return {k[len(prefix) :]: s.count for k, s in self._rates.items() if k.startswith(prefix)}

    def rates(self, organization_id: str, user_id: str) -> dict[str, float]:
        """Events per second of the user's open windows, per event type."""
        seconds = self.window_ms / 1000
        return {k: n / seconds for k, n in self.window_counts(organization_id, user_id).items()}

    def baseline(self, organization_id: str, user_id: str, event_type: str) -> RateState | None:
        return self._rates.get(f"rate\x1f{organization_id}\x1f{user_id}\x1f{event_type}")
