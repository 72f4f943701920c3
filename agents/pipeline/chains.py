"""Running each topic's SmartModule chain on the records the pipeline consumes.

Chains run on the SmartModule engine (``gateway.smartmodules``), the same ``.wasm``
modules a Fluvio cluster runs. A chain is built once at start: an engine that cannot be
imported, an unknown module or refused params stop the pipeline there, with the reason.

Consecutive steps with the same ``types`` run as one engine chain. A step with ``types``
sees only the records of those envelope types; the others pass it unchanged, and the
results are put back in offset order per partition.

A record a module fails on (a soft error) is rejected with the module's hint and the
rest of the batch goes on. A hard error (trap, fuel, memory) fails the whole call, so
the batch is run again record by record: only the records that fail alone are rejected.
Rejected records are kept in the ``rejected`` table, never silently dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from agents.config import ChainStep, PipelineConfig, chains_for
from agents.errors import PipelineConfigError
from agents.events import record_type
from agents.work import Source
from gateway.streamlog.interface import Record

if TYPE_CHECKING:
    from gateway.smartmodules import ChainInstance, SmartModuleRegistry

logger = structlog.get_logger(__name__)

Rejection = tuple[Source, str, str, bytes | None]
"""``(source, stage, reason, original value)``."""


@dataclass
class _Segment:
    types: frozenset[str]
    instance: ChainInstance
    name: str


class TopicChain:
    """A topic's chain: ``run`` takes records and returns what comes out, with rejections."""

    def __init__(self, topic: str, segments: list[_Segment]) -> None:
        self.topic = topic
        self.segments = segments
        self.name = " | ".join(s.name for s in segments)

    def run(self, records: Sequence[Record]) -> tuple[list[Record], list[Rejection]]:
        """Outputs in offset order per partition (several outputs of one record keep their
        order), and the records rejected on the way."""
        originals = {(r.partition, r.offset): r.value for r in records}
        rejected: list[Rejection] = []
        current = list(records)
        for segment in self.segments:
            if segment.types:
                chosen = [r for r in current if record_type(r.value) in segment.types]
                passing = [r for r in current if record_type(r.value) not in segment.types]
            else:
                chosen, passing = current, []
            outputs = _run(segment.instance, chosen, rejected, originals)
            current = sorted(outputs + passing, key=lambda r: (r.partition, r.offset))
        return current, rejected

    def close(self) -> None:
        for segment in self.segments:
            segment.instance.close()


def _run(
    instance: ChainInstance,
    records: list[Record],
    rejected: list[Rejection],
    originals: Mapping[tuple[int, int], bytes],
) -> list[Record]:
    from gateway.smartmodules import SmartModuleError, SmartModuleRecordError

    out: list[Any] = []

    def reject(record: Record | SmartModuleRecordError, error: SmartModuleError) -> None:
        source = Source(record.topic, record.partition, record.offset)
        reason = (error.hint if isinstance(error, SmartModuleRecordError) else "") or str(error)
        stage = error.module or instance.name
        rejected.append((source, stage, reason, originals.get((source.partition, source.offset))))
        logger.warning("record_rejected", source=str(source), stage=stage, reason=reason)

    pending: Sequence[Record] = records
    while pending:
        try:
            out.extend(instance.process(pending).records)
            break
        except SmartModuleRecordError as soft:
            out.extend(soft.successes)
            reject(soft, soft)
            pending = soft.remaining
        except SmartModuleError:
            # A hard error fails the whole call: run the records one by one, so that only
            # those that fail on their own are rejected.
            for record in pending:
                try:
                    out.extend(instance.process([record]).records)
                except SmartModuleRecordError as soft:
                    out.extend(soft.successes)
                    reject(record, soft)
                except SmartModuleError as hard:
                    reject(record, hard)
            break
    return [Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value) for r in out]


def build_chains(
    config: PipelineConfig, registry: SmartModuleRegistry | None = None
) -> dict[str, TopicChain]:
    """The chain of each consumed topic that has one; raises ``PipelineConfigError``."""
    wanted = chains_for(config)
    if not wanted:
        return {}
    first = next(iter(wanted))
    try:
        from gateway import smartmodules
    except ImportError as exc:
        raise PipelineConfigError(
            f"the memory pipeline's chain for {first!r} needs the SmartModule engine "
            f"(gateway.smartmodules), which cannot be imported: {exc}. Install the project "
            "with its dependencies (pip install -e .), or configure no chain for the topic."
        ) from None
    if registry is None:
        engine = smartmodules.SmartModuleEngine(config.smartmodule_cache_dir)
        registry = smartmodules.SmartModuleRegistry(engine)
    chains: dict[str, TopicChain] = {}
    try:
        for topic, steps in wanted.items():
            chains[topic] = TopicChain(topic, _segments(topic, steps, registry))
    except BaseException:
        for chain in chains.values():
            chain.close()
        raise
    return chains


def _segments(
    topic: str, steps: Sequence[ChainStep], registry: SmartModuleRegistry
) -> list[_Segment]:
    from gateway.smartmodules import SmartModuleError, UnknownSmartModule

    segments = []
    for types, group in itertools.groupby(steps, key=lambda step: frozenset(step.types)):
        links = list(group)
        filters = [{"smartmodule": s.smartmodule, "params": s.params} for s in links]
        try:
            instance = registry.chain(filters)
        except UnknownSmartModule as exc:
            raise PipelineConfigError(
                f"the memory pipeline's chain for {topic!r} names a SmartModule that is not "
                f"installed: {exc}. Build it (make -C smartmodules), add its directory to "
                "AGENTMEM_SMARTMODULE_DIR, or change the chain."
            ) from None
        except SmartModuleError as exc:
            raise PipelineConfigError(
                f"the memory pipeline's chain for {topic!r} cannot start: {exc}"
            ) from None
        segments.append(_Segment(types, instance, " | ".join(s.smartmodule for s in links)))
    return segments
