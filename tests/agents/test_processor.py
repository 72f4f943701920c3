"""The stream processor: windows, rates, EWMA/z-score anomalies, state across restarts."""

from __future__ import annotations

import json
from typing import Any

from agent_helpers import envelope

from agents import PipelineConfig
from agents.pipeline.processor import StreamProcessor
from gateway.streamlog.interface import Record

T0 = 1_763_000_040_000 - 1_763_000_040_000 % 60_000
CONFIG = PipelineConfig(window_s=60, anomaly_warmup=5, anomaly_min_count=10, anomaly_z=4.0)


class Feed:
    """Records of one partition with increasing offsets."""

    def __init__(self, topic: str = "user-events", partition: int = 0) -> None:
        self.topic, self.partition, self.offset = topic, partition, 0

    def __call__(self, events: list[dict[str, Any]]) -> list[Record]:
        out = []
        for event in events:
            out.append(
                Record(
                    self.topic,
                    self.partition,
                    self.offset,
                    event["timestamp"],
                    None,
                    json.dumps(event).encode(),
                )
            )
            self.offset += 1
        return out


def clicks(user: str, window: int, count: int) -> list[dict[str, Any]]:
    start = T0 + window * 60_000
    return [
        envelope(
            "user_interaction", {"action": "click", "importance": 0.4}, user=user, ts=start + i * 10
        )
        for i in range(count)
    ]


def test_a_burst_after_a_steady_baseline_is_one_anomaly() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    for window in range(6):
        assert processor.observe(feed(clicks("alice", window, 2))).anomalies == []
    burst = processor.observe(feed(clicks("alice", 6, 40)))
    assert len(burst.anomalies) == 1  # once per window, however long the burst goes on
    anomaly = burst.anomalies[0]
    assert (anomaly.kind, anomaly.user_id, anomaly.subject) == (
        "event_rate",
        "alice",
        "user_interaction",
    )
    assert anomaly.metadata["count"] == 10 and anomaly.metadata["z"] >= 4
    assert anomaly.offset == 12 + 9  # the record that crossed the threshold
    assert anomaly.id == "anomaly:event_rate:user-events:0:21:user_interaction"
    assert "user alice sent 10 user_interaction events" in anomaly.message


def test_no_anomaly_during_warmup_or_for_quiet_users() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    # A burst in the first windows: no baseline yet.
    assert processor.observe(feed(clicks("alice", 0, 50))).anomalies == []
    for window in range(1, 8):
        processor.observe(feed(clicks("bob", window, 1)))
    # Well above bob's baseline but below anomaly_min_count.
    assert processor.observe(feed(clicks("bob", 8, 9))).anomalies == []


def test_steady_busy_traffic_is_not_an_anomaly() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    found = []
    for window, count in enumerate([30, 34, 28, 31, 33, 29, 35, 30, 32, 36]):
        found += processor.observe(feed(clicks("alice", window, count))).anomalies
    assert found == []


def test_aggregates_and_rates_per_user_and_type() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    events = [
        *clicks("alice", 0, 3),
        envelope(
            "app_event", {"event_type": "login", "source": "web", "importance": 0.9}, ts=T0 + 5
        ),
    ]
    observed = processor.observe(feed(events))
    by_type = {a.event_type: a for a in observed.aggregates}
    assert by_type["user_interaction"].count == 3
    assert by_type["user_interaction"].importance_sum == 3 * 0.4
    assert by_type["app_event"].rate_per_s == 1 / 60
    assert processor.window_counts("acme", "alice") == {"user_interaction": 3, "app_event": 1}
    assert processor.rates("acme", "alice")["user_interaction"] == 3 / 60
    # Moving to the next window reports the closed one too.
    later = processor.observe(feed(clicks("alice", 2, 1)))
    starts = sorted((a.window_start, a.count) for a in later.aggregates)
    assert starts == [(T0, 3), (T0 + 120_000, 1)]


def test_empty_windows_lower_the_baseline() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    processor.observe(feed(clicks("alice", 0, 20)))
    processor.observe(feed(clicks("alice", 10, 1)))
    state = processor.baseline("acme", "alice", "user_interaction")
    assert state is not None and state.windows == 10 and state.mean < 1


def sensor(value: float, ts: int) -> dict[str, Any]:
    return envelope(
        "sensor_data", {"sensor_id": "boiler-1", "readings": {"temp": value, "bar": 1.0}}, ts=ts
    )


def test_sensor_reading_far_from_its_baseline_is_an_anomaly() -> None:
    processor, feed = StreamProcessor(CONFIG), Feed()
    normal = [sensor(70.0 + (i % 5) * 0.2, T0 + i) for i in range(20)]
    assert processor.observe(feed(normal)).anomalies == []
    spike = processor.observe(feed([sensor(95.0, T0 + 100), sensor(70.4, T0 + 101)]))
    assert [(a.kind, a.subject) for a in spike.anomalies] == [("sensor_reading", "boiler-1/temp")]
    assert spike.anomalies[0].metadata["value"] == 95.0
    assert "Sensor anomaly: boiler-1 temp = 95" in spike.anomalies[0].message


def test_state_survives_a_restart_and_records_are_counted_once() -> None:
    first, feed = StreamProcessor(CONFIG), Feed()
    for window in range(6):
        first.observe(feed(clicks("alice", window, 2)))
    saved, forgotten, positions = first.take_changes()
    assert positions == {("user-events", 0): 12} and not forgotten
    second = StreamProcessor(CONFIG)
    second.load(list(saved.items()), positions)
    # Records below the saved position are skipped: a replay after a crash counts nothing twice.
    replay = Feed()
    assert second.observe(replay(clicks("alice", 0, 12))).aggregates == []
    burst = second.observe(feed(clicks("alice", 6, 40)))
    assert len(burst.anomalies) == 1


def test_baselines_are_bounded() -> None:
    processor, feed = StreamProcessor(PipelineConfig(processor_max_keys=3)), Feed()
    for user in ["a", "b", "c", "d", "e"]:
        processor.observe(feed(clicks(user, 0, 1)))
    saved, forgotten, _ = processor.take_changes()
    assert sorted(k.split("\x1f")[2] for k in saved) == ["c", "d", "e"]
    assert sorted(k.split("\x1f")[2] for k in forgotten) == ["a", "b"]
    processor.observe(feed(clicks("f", 0, 1)))
    _, forgotten, _ = processor.take_changes()
    assert forgotten == {"rate\x1facme\x1fc\x1fuser_interaction"}


def test_records_that_are_not_envelopes_are_skipped() -> None:
    processor = StreamProcessor(CONFIG)
    records = [
        Record("user-events", 0, 0, T0, None, b"not json"),
        Record("user-events", 0, 1, T0, None, b'{"type": "user_interaction"}'),
        Record("user-events", 0, 2, T0, None, b"[1, 2]"),
    ]
    assert processor.observe(records).skipped == 3
