"""The Fluvio backend's translations, checked with the real ``fluvio`` client package (no
cluster needed: a cluster cannot run on these machines; the contract suite covers one when
AGENTMEM_FLUVIO_ENDPOINT is set)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

fluvio = pytest.importorskip("fluvio")

from gateway.errors import TopicExists, Unavailable, UnknownTopic  # noqa: E402
from gateway.streamlog.fluvio import FluvioLog, ProducerOptions, SmartModuleInvocation  # noqa: E402
from gateway.streamlog.fluvio.errors import map_error  # noqa: E402
from gateway.streamlog.fluvio.specs import (  # noqa: E402
    build_topic_spec,
    connection_config,
    consumer_config,
    invocations_from_filters,
    producer_config,
    topic_spec,
)
from gateway.streamlog.interface import TopicSpec  # noqa: E402
from gateway.streamlog.topics import load_topics  # noqa: E402

DIST = Path(__file__).parents[4] / "smartmodules" / "dist"
TOPICS = load_topics(Path(__file__).parents[4] / "gateway" / "topics.toml")


@pytest.mark.parametrize("spec", TOPICS, ids=[t.name for t in TOPICS])
def test_declared_topics_translate(spec: TopicSpec) -> None:
    translated = topic_spec(spec)
    assert translated.partitions == spec.partitions
    assert translated.retention_time == (spec.retention_ms or 0) // 1000 or None
    compression = translated.compression_type
    assert (compression.value if compression else "none") == spec.compression
    assert build_topic_spec(spec) is not None  # the client's native layer accepts it


def test_declared_topic_settings() -> None:
    by_name = {t.name: topic_spec(t) for t in TOPICS}
    assert by_name["user-events"].partitions == 16
    assert by_name["user-events"].retention_time == 7 * 86_400
    assert by_name["user-events"].compression_type == fluvio.CompressionType.GZIP
    assert by_name["memory-updates"].compression_type == fluvio.CompressionType.LZ4


def test_size_cap_translates() -> None:
    spec = TopicSpec(name="capped", partitions=2, max_partition_bytes=1 << 20)
    assert topic_spec(spec).max_partition_size == 1 << 20


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "snappy", "zstd"])
@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_producer_configs_build(compression: str, delivery: str) -> None:
    options = ProducerOptions(linger_ms=5, compression=compression, delivery=delivery)  # type: ignore[arg-type]
    assert producer_config(options) is not None


def test_connection_config() -> None:
    assert connection_config(None) is None
    assert isinstance(connection_config("127.0.0.1:9003"), fluvio.FluvioConfig)
    assert isinstance(connection_config("sc.example:9003", "anonymous"), fluvio.FluvioConfig)


def test_smartmodule_invocations_build_a_consumer_config() -> None:
    invocations = [
        SmartModuleInvocation(name="event-filter", params={"min_importance": "0.8"}),
        SmartModuleInvocation(path=str(DIST / "data-transform.wasm"), kind="map"),
        SmartModuleInvocation(name="event-aggregate", kind="aggregate", aggregate_initial=b"{}"),
    ]
    assert isinstance(consumer_config(invocations), fluvio.ConsumerConfig)
    assert isinstance(consumer_config([], disable_continuous=True), fluvio.ConsumerConfig)


@pytest.mark.parametrize(("name", "path"), [(None, None), ("a", "/b.wasm")])
def test_invocation_needs_exactly_one_source(name: str | None, path: str | None) -> None:
    with pytest.raises(ValueError, match="either a registered name or a path"):
        SmartModuleInvocation(name=name, path=path)


def test_subscription_filters_become_invocations() -> None:
    [first, second] = invocations_from_filters(
        [
            {
                "smartmodule": "memory-filter",
                "params": {"min_importance": 0.5, "ops": ["created", "updated"], "strict": True},
            },
            {"smartmodule": "event-aggregate", "aggregate_initial": "{}"},
        ]
    )
    assert first.name == "memory-filter"
    assert first.params == {"min_importance": "0.5", "ops": "created,updated", "strict": "true"}
    assert second.aggregate_initial == b"{}"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Topic not found: nope", UnknownTopic),
        ("topic 'x' already exists", TopicExists),
        ("Connection refused (os error 111)", Unavailable),
        ("timeout waiting for SPU", Unavailable),
    ],
)
def test_client_errors_map_to_project_errors(message: str, kind: type) -> None:
    error = map_error(RuntimeError(message), "x")
    assert isinstance(error, kind)
    if kind is Unavailable:
        assert error.temporary and "AGENTMEM_FLUVIO_ENDPOINT" in error.message


def test_log_knows_its_topics_before_connecting() -> None:
    log = FluvioLog("127.0.0.1:9003", topics=TOPICS)
    with pytest.raises(UnknownTopic):
        log.topic("user-events")  # known only once open() has applied them
    assert log.topics() == []


def test_deploy_dry_run_lists_the_project_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "smartmodule", "deploy", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in ("event-filter", "data-transform", "event-aggregate", "memory-filter"):
        assert f"would register {name} from" in result.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "smartmodule", "deploy", "nope"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "unknown SmartModule 'nope'" in refused.stderr
