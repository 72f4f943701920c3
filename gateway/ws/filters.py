"""SmartModule filters of subscriptions: building chains and running them on batches.

``filters: [{"smartmodule": NAME, "params": {...}}, ...]`` names registered modules only;
params are checked against what each module declares. Chains that keep no state between
batches (no aggregate, no look-back) are shared: one instance per distinct chain, and one
evaluation per record batch however many subscriptions use it. Stateful chains get an
instance of their own per subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import ErrorDetail, GatewayError, LimitExceeded
from gateway.smartmodules import (
    ChainInstance,
    OutputRecord,
    SmartModuleError,
    SmartModuleHardError,
    SmartModuleRecordError,
    SmartModuleRegistry,
)
from gateway.streamlog.interface import Record
from gateway.ws.frames import Filter

MAX_LINKS = 8


class FilterChain:
    """A chain as a subscription uses it."""

    def __init__(
        self, instance: ChainInstance, shared: bool, entries: Sequence[dict[str, Any]] = ()
    ) -> None:
        self.instance = instance
        self.shared = shared
        self.entries = list(entries)
        """The filters as given, for a log that runs the chain itself."""
        self.key = instance.spec.key
        self.name = instance.name

    def run(self, records: Sequence[Record]) -> tuple[list[OutputRecord], list[SmartModuleError]]:
        """Outputs of ``records``, and the errors met on the way.

        A soft error (one record failed) keeps the outputs before it, skips the failing
        record and goes on with the rest, as a Fluvio consumer sees successes then the
        error. A hard error (trap, fuel, memory) ends the call: what follows it in this
        batch is not delivered.
        """
        outputs: list[OutputRecord] = []
        errors: list[SmartModuleError] = []
        pending: Sequence[Record] = records
        while pending:
            try:
                outputs.extend(self.instance.process(pending).records)
                break
            except SmartModuleRecordError as soft:
                outputs.extend(soft.successes)
                errors.append(soft)
                pending = soft.remaining
            except SmartModuleError as hard:
                errors.append(hard)
                break
        return outputs, errors


class FilterChains:
    """Builds subscription chains, sharing instances of stateless ones."""

    def __init__(self, registry: SmartModuleRegistry | None) -> None:
        self.registry = registry
        self._shared: dict[str, FilterChain] = {}

    def build(self, filters: Sequence[Filter]) -> FilterChain | None:
        if not filters:
            return None
        if self.registry is None:
            raise LimitExceeded(
                "SmartModules are not available on this gateway; subscribe with no filters.",
                [ErrorDetail(path="$.filters", problem="not supported")],
            )
        if len(filters) > MAX_LINKS:
            raise LimitExceeded(
                f"A chain may have at most {MAX_LINKS} SmartModules; this one has {len(filters)}.",
                [ErrorDetail(path="$.filters", problem="too many")],
            )
        entries: list[dict[str, Any]] = []
        for index, entry in enumerate(filters):
            try:
                self.registry.validate(entry.smartmodule, entry.params)
            except SmartModuleError as error:
                error.details = (ErrorDetail(path=f"$.filters[{index}]", problem=error.message),)
                raise
            item: dict[str, Any] = {"smartmodule": entry.smartmodule, "params": entry.params}
            if entry.aggregate_initial is not None:
                item["aggregate_initial"] = entry.aggregate_initial
            entries.append(item)
        spec = self.registry.spec(entries)
        if spec.shareable:
            chain = self._shared.get(spec.key)
            if chain is None:
                chain = self._shared[spec.key] = FilterChain(
                    self.registry.chain(entries), True, entries
                )
            return chain
        return FilterChain(self.registry.chain(entries), False, entries)


def chain_error(error: SmartModuleError) -> GatewayError:
    """The error frame's content for a chain failure, with the failing record's position."""
    if isinstance(error, SmartModuleRecordError):
        error.details = (
            ErrorDetail(
                path=f"{error.topic}/{error.partition}/{error.offset}",
                problem=f"record at offset {error.offset} failed in {error.module}",
            ),
        )
    return error


def is_fatal(error: SmartModuleError) -> bool:
    return isinstance(error, SmartModuleHardError)
