"""Pure translations from the project's types to the ``fluvio`` client's: topic specs,
producer and connection configuration, SmartModule invocations for consumers.

Nothing here talks to a cluster, so all of it is tested without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import fluvio
import msgspec

from gateway.streamlog.interface import TopicSpec

TlsMode = Literal["none", "anonymous"]
DeliverySemantic = Literal["at-least-once", "at-most-once"]

_COMPRESSION = {
    "none": fluvio.CompressionType.NONE,
    "gzip": fluvio.CompressionType.GZIP,
    "lz4": fluvio.CompressionType.LZ4,
    "snappy": fluvio.CompressionType.SNAPPY,
    "zstd": fluvio.CompressionType.ZSTD,
}
_PRODUCER_COMPRESSION = {
    "none": fluvio.Compression.None_,
    "gzip": fluvio.Compression.Gzip,
    "lz4": fluvio.Compression.Lz4,
    "snappy": fluvio.Compression.Snappy,
    "zstd": fluvio.Compression.Zstd,
}


class ProducerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the gateway's producers batch and deliver (Fluvio's producer settings)."""

    linger_ms: int = 0
    """0: send each record at once; acks wait for the SPU anyway."""
    batch_bytes: int = 1_048_576
    compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = "none"
    delivery: DeliverySemantic = "at-least-once"
    timeout_ms: int = 10_000


class SmartModuleInvocation(msgspec.Struct, frozen=True, kw_only=True):
    """A SmartModule a Fluvio consumer asks the cluster to run: by registered name or by
    ``.wasm`` path, with params and, for an aggregate, the initial accumulator."""

    name: str | None = None
    path: str | None = None
    params: dict[str, str] = msgspec.field(default_factory=dict)
    kind: Literal["filter", "map", "array_map", "filter_map", "aggregate"] | None = None
    aggregate_initial: bytes | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.path is None):
            raise ValueError("a SmartModule invocation names either a registered name or a path")


def topic_spec(spec: TopicSpec, replication: int = 1) -> fluvio.TopicSpec:
    """The Fluvio topic spec of a declared topic (partitions, retention, compression, cap)."""
    result = (
        fluvio.TopicSpec.create().with_partitions(spec.partitions).with_replications(replication)
    )
    if spec.compression != "none":
        result = result.with_compression(_COMPRESSION[spec.compression])
    if spec.retention_ms is not None:
        # Fluvio takes retention in whole seconds.
        result = result.with_retention_time(max(1, spec.retention_ms // 1000))
    if spec.max_partition_bytes is not None:
        result = result.with_max_partition_size(spec.max_partition_bytes)
    return result


def build_topic_spec(spec: TopicSpec, replication: int = 1) -> Any:
    """The spec as the admin API takes it.

    The client's own ``TopicSpec.build`` hands the compression to its native layer as a
    string, which that layer refuses; the native spec is built without it and the
    compression set on it directly.
    """
    built = msgspec.structs.replace(spec, compression="none")
    native = topic_spec(built, replication).build()
    if spec.compression != "none":
        native.set_compression_type(_PRODUCER_COMPRESSION[spec.compression])
    return native


def producer_config(options: ProducerOptions) -> Any:
    builder = (
        fluvio.TopicProducerConfigBuilder()
        .linger(options.linger_ms)
        .batch_size(options.batch_bytes)
        .compression(_PRODUCER_COMPRESSION[options.compression])
        .delivery_semantic(
            fluvio.DeliverySemantic.AtLeastOnce
            if options.delivery == "at-least-once"
            else fluvio.DeliverySemantic.AtMostOnce
        )
        .timeout(options.timeout_ms)
    )
    return builder.build()


def connection_config(endpoint: str | None, tls: TlsMode = "none") -> fluvio.FluvioConfig | None:
    """``None`` means: use the current profile of ``~/.fluvio/config``."""
    if endpoint is None:
        return None
    config = fluvio.FluvioConfig.new(endpoint)
    if tls == "anonymous":
        config.set_anonymous_tls()
    else:
        config.disable_tls()
    return config


_KINDS = {
    "filter": fluvio.SmartModuleKind.Filter,
    "map": fluvio.SmartModuleKind.Map,
    "array_map": fluvio.SmartModuleKind.ArrayMap,
    "filter_map": fluvio.SmartModuleKind.FilterMap,
    "aggregate": fluvio.SmartModuleKind.Aggregate,
}


def consumer_config(
    invocations: Sequence[SmartModuleInvocation], *, disable_continuous: bool = False
) -> fluvio.ConsumerConfig:
    """A consumer config that makes the cluster run ``invocations`` in order (a chain)."""
    config = fluvio.ConsumerConfig()
    if disable_continuous:
        config.disable_continuous(True)
    for invocation in invocations:
        config.smartmodule(
            name=invocation.name,
            path=invocation.path,
            kind=_KINDS[invocation.kind] if invocation.kind else None,
            params=dict(invocation.params),
            aggregate=(
                # The client's hint says bytes; its native layer takes the byte values.
                list(invocation.aggregate_initial)
                if invocation.aggregate_initial is not None
                else None
            ),
        )
    return config


def invocations_from_filters(
    filters: Sequence[Mapping[str, Any]], known: Mapping[str, Path] | None = None
) -> list[SmartModuleInvocation]:
    """Subscription ``filters`` as cluster-side invocations, by registered name.

    Params are passed as strings (Fluvio's params are a string map); booleans and numbers
    are written the way the project's modules parse them.
    """
    result = []
    for entry in filters:
        name = str(entry["smartmodule"])
        params = {k: _param_text(v) for k, v in dict(entry.get("params") or {}).items()}
        initial = entry.get("aggregate_initial")
        result.append(
            SmartModuleInvocation(
                name=name,
                params=params,
                aggregate_initial=initial.encode() if isinstance(initial, str) else initial,
            )
        )
    return result


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
