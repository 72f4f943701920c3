"""Chains: SmartModules applied in order to batches of records, and their identity.

A ``ChainInstance`` owns one wasmtime store holding an instance of each of its
modules, as a Fluvio SPU does for one consumer stream: ``init`` ran with the link's
params, aggregate accumulators and any state a module keeps between calls live there.
Each module's successes feed the next as raw bytes (no decoding in between), with the
batch's original base offset and timestamp; only the last module's output is decoded.

Differences from a Fluvio SPU, all deliberate:

- after a soft error in one module, the records that module produced before the
  failure still go through the rest of the chain (the SPU returns them unfiltered by
  later modules), so every delivered record has passed every module;
- a hard error makes the whole ``process`` call fail atomically (accumulators are
  rolled back) and recycles the instances: the next call re-instantiates the modules
  and re-runs ``init`` (and ``look_back`` on the history it was given), where the SPU
  ends the stream;
- memory is kept flat: outputs are freed with ``dealloc`` when exported, and a store
  whose memory passes a threshold is recycled between calls.

A ``ChainSpec`` identifies a chain by module digests, params, look-back and initial
accumulators, so callers can evaluate identical stateless chains once per batch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence

import msgspec
import wasmtime

from gateway.smartmodules import codec
from gateway.smartmodules.abi import Kind
from gateway.smartmodules.batch import Batch, OutputRecord, PreparedInput, prepare
from gateway.smartmodules.errors import (
    InvalidSmartModuleParams,
    SmartModuleClosed,
    SmartModuleHardError,
    SmartModuleInitError,
    SmartModuleMemoryLimit,
    SmartModuleOutputError,
    SmartModuleRecordError,
)
from gateway.smartmodules.instance import Limits, ModuleInstance, OutputSlot
from gateway.smartmodules.lookback import HistoryNeed, LookBack, history_needed
from gateway.smartmodules.module import SmartModule
from gateway.smartmodules.params import ParamError, validate
from gateway.streamlog.interface import Record

log = logging.getLogger(__name__)


class ChainLink:
    """One module of a chain with its params (validated against its declaration)."""

    __slots__ = ("aggregate_initial", "look_back", "module", "params")

    def __init__(
        self,
        module: SmartModule,
        params: Mapping[str, object] | None = None,
        *,
        look_back: LookBack | None = None,
        aggregate_initial: bytes | str | None = None,
    ) -> None:
        try:
            self.params = validate(module.name, module.params, params or {})
        except ParamError as exc:
            raise InvalidSmartModuleParams(str(exc), module=module.name, param=exc.param) from None
        self.module = module
        self.look_back = look_back
        if isinstance(aggregate_initial, str):
            aggregate_initial = aggregate_initial.encode()
        self.aggregate_initial = aggregate_initial


class LinkSpec(msgspec.Struct, frozen=True):
    digest: str
    params: tuple[tuple[str, str], ...]
    look_back: LookBack | None = None
    aggregate_initial: bytes | None = None


class ChainSpec(msgspec.Struct, frozen=True):
    """What makes two chains compute the same thing; hashable, usable as a dict key."""

    links: tuple[LinkSpec, ...]
    version: int

    @classmethod
    def of(cls, links: Sequence[ChainLink], version: int) -> ChainSpec:
        return cls(
            tuple(
                LinkSpec(
                    link.module.digest,
                    tuple(sorted(link.params.items())),
                    link.look_back if link.module.has_look_back else None,
                    (link.aggregate_initial or b"") if link.module.kind == Kind.AGGREGATE else None,
                )
                for link in links
            ),
            version,
        )

    @property
    def key(self) -> str:
        """A short stable text form of the spec (for logs, metrics, map keys)."""
        return hashlib.sha256(msgspec.msgpack.encode(self)).hexdigest()[:32]

    @property
    def shareable(self) -> bool:
        """Whether one evaluation can serve every subscriber with this spec whatever
        their start: no aggregate and no look-back. (A module may still keep state of
        its own between calls, which Fluvio allows; such modules should not be shared.)"""
        return all(link.aggregate_initial is None and link.look_back is None for link in self.links)


class ChainOutput(msgspec.Struct):
    records: list[OutputRecord]
    accumulator: bytes | None = None
    """The state of the chain's last aggregate module after this call, if it has one."""


class ChainStats(msgspec.Struct):
    calls: int = 0
    batches: int = 0
    records_in: int = 0
    records_out: int = 0
    soft_errors: int = 0
    hard_errors: int = 0
    recycles: int = 0


class ChainInstance:
    """A chain ready to process batches; safe to call from one thread at a time or
    from several (calls are serialized)."""

    def __init__(
        self,
        wasm_engine: wasmtime.Engine,
        links: Sequence[ChainLink],
        *,
        limits: Limits,
        version: int,
        max_batch_bytes: int,
        recycle_memory_bytes: int,
        direct_calls: bool = True,
    ) -> None:
        if not links:
            raise ValueError("a chain needs at least one SmartModule")
        self.links = tuple(links)
        self.spec = ChainSpec.of(self.links, version)
        self.stats = ChainStats()
        self._wasm_engine = wasm_engine
        self._limits = limits
        self._version = version
        self._max_batch_bytes = max_batch_bytes
        self._recycle_memory_bytes = recycle_memory_bytes
        self._direct_calls = direct_calls
        self._slot = OutputSlot()
        self._linker = self._make_linker()
        self._accumulators = [
            link.aggregate_initial or b"" if link.module.kind == Kind.AGGREGATE else b""
            for link in self.links
        ]
        self._aggregate_index = max(
            (i for i, link in enumerate(self.links) if link.module.kind == Kind.AGGREGATE),
            default=None,
        )
        # Only filters copy records verbatim; then outputs are matched to the inputs.
        self._all_filters = all(link.module.kind == Kind.FILTER for link in self.links)
        self._history: list[Record] | None = None
        self._history_now_ms = 0
        self._store: wasmtime.Store | None = None
        self._instances: list[ModuleInstance] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._start()

    @property
    def name(self) -> str:
        return " | ".join(link.module.name for link in self.links)

    @property
    def history_needed(self) -> HistoryNeed | None:
        """How much history ``look_back`` should be given, if any module asks for it."""
        return history_needed(
            [link.look_back for link in self.links if link.look_back and link.module.has_look_back]
        )

    # -- lifecycle --------------------------------------------------------------------

    def _make_linker(self) -> wasmtime.Linker:
        linker = wasmtime.Linker(self._wasm_engine)
        if any(link.module.uses_wasi for link in self.links):
            linker.define_wasi()
        ty = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [])
        defined: set[str] = set()
        for link in self.links:
            for namespace in link.module.copy_records_modules:
                if namespace not in defined:
                    linker.define_func(namespace, "copy_records", ty, self._slot.copy_records)
                    defined.add(namespace)
        return linker

    def _start(self) -> None:
        store = wasmtime.Store(self._wasm_engine)
        store.set_limits(memory_size=self._limits.memory_limit_bytes)
        if any(link.module.uses_wasi for link in self.links):
            # A module's stderr is the gateway's (as on an SPU); its stdout is discarded,
            # since the CLI prints records there. Output callbacks into Python are
            # avoided: wasmtime calls them from its own threads, even at exit.
            wasi = wasmtime.WasiConfig()
            wasi.inherit_stderr()
            store.set_wasi(wasi)
        instances = []
        for link in self.links:
            module = link.module
            store.set_fuel(self._limits.fuel)
            try:
                instance = self._linker.instantiate(store, module.compiled)
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                reason = [line for line in str(exc).splitlines() if line.strip()][-1:]
                raise SmartModuleInitError(
                    f"SmartModule {module.name!r} cannot be instantiated: "
                    f"{reason[0].strip() if reason else exc}",
                    module=module.name,
                    status=None,
                ) from None
            member = ModuleInstance(
                module,
                store,
                instance,
                self._slot,
                self._limits,
                self._version,
                self._direct_calls,
            )
            member.init(link.params, link.look_back)
            instances.append(member)
        self._store = store
        self._instances = instances
        if self._history:
            self._replay_look_back(instances, self._history, self._history_now_ms)

    def _recycle(self) -> None:
        # Dropping the store frees every instance and its memory; the next call starts
        # over with fresh instances.
        self._instances = None
        self._store = None
        self.stats.recycles += 1

    def close(self) -> None:
        with self._lock:
            self._instances = None
            self._store = None
            self._closed = True

    def __enter__(self) -> ChainInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def memory_bytes(self) -> int:
        """Linear memory currently held by the chain's instances."""
        with self._lock:
            return sum(m.memory_bytes() for m in self._instances or ())

    def _running(self) -> list[ModuleInstance]:
        if self._closed:
            raise SmartModuleClosed(f"the SmartModule chain {self.name} is closed")
        if self._instances is None:
            self._start()
        assert self._instances is not None
        return self._instances

    # -- look-back --------------------------------------------------------------------

    def look_back(self, history: Sequence[Record], now_ms: int | None = None) -> None:
        """Run ``look_back`` of every module that asked for history, once, before the
        first ``process``. ``history`` is in log order (oldest first) and should cover
        ``history_needed``; each module gets the part its ``LookBack`` selects."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            instances = self._running()
            kept = list(history)
            try:
                self._replay_look_back(instances, kept, now)
            except BaseException:
                self._recycle()
                raise
            # Kept so that a recycled chain rebuilds the same state.
            self._history = kept
            self._history_now_ms = now

    def _replay_look_back(
        self, instances: Sequence[ModuleInstance], history: Sequence[Record], now_ms: int
    ) -> None:
        for link, member in zip(self.links, instances, strict=True):
            if link.look_back is None or not link.module.has_look_back:
                continue
            selected = link.look_back.select(history, now_ms)
            for batch in prepare(selected, self._max_batch_bytes).batches:
                # As in Fluvio, look-back records come with base offset and timestamp 0.
                parts = (
                    codec.input_prefix(0, len(batch.block)),
                    batch.block,
                    codec.input_suffix(self._version, 0),
                )
                member.look_back(parts, len(batch))

    # -- processing -------------------------------------------------------------------

    def prepare(self, records: Sequence[Record]) -> PreparedInput:
        return prepare(records, self._max_batch_bytes)

    def process(self, records: Sequence[Record] | PreparedInput) -> ChainOutput:
        """Run ``records`` through the chain; returns the last module's output records.

        Raises ``SmartModuleRecordError`` (soft error: deliver its ``successes``, then
        the error) or a ``SmartModuleHardError`` (nothing to deliver; the chain is
        recycled and the next call works again).
        """
        prepared = records if isinstance(records, PreparedInput) else self.prepare(records)
        with self._lock:
            instances = self._running()
            saved = list(self._accumulators)
            out: list[OutputRecord] = []
            stats = self.stats
            stats.calls += 1
            stats.records_in += len(prepared)
            try:
                for i, batch in enumerate(prepared.batches):
                    stats.batches += 1
                    failure = self._run_batch(instances, batch, out)
                    if failure is not None:
                        stats.soft_errors += 1
                        stats.records_out += len(out)
                        raise self._record_error(failure, batch, prepared.batches[i + 1 :], out)
            except SmartModuleHardError:
                stats.hard_errors += 1
                self._accumulators = saved
                self._recycle()
                raise
            stats.records_out += len(out)
            if any(m.size > self._recycle_memory_bytes for m in instances):
                log.info(
                    "recycling SmartModule chain %s: memory above %d bytes",
                    self.name,
                    self._recycle_memory_bytes,
                )
                self._recycle()
            accumulator = None
            if self._aggregate_index is not None:
                accumulator = self._accumulators[self._aggregate_index]
            return ChainOutput(out, accumulator)

    def _run_batch(
        self, instances: Sequence[ModuleInstance], batch: Batch, out: list[OutputRecord]
    ) -> tuple[str, codec.RecordFailure] | None:
        block = batch.block
        count = len(batch)
        version = self._version
        prefix_base = batch.base_offset
        suffix = codec.input_suffix(version, batch.base_timestamp)
        failure: tuple[str, codec.RecordFailure] | None = None
        last = len(instances) - 1
        for i, member in enumerate(instances):
            if count == 0:
                break
            parts: tuple[bytes, ...] = (codec.input_prefix(prefix_base, len(block)), block, suffix)
            aggregate = member.module.kind == Kind.AGGREGATE
            if aggregate:
                parts += (codec.accumulator_suffix(self._accumulators[i]),)
            size = sum(len(p) for p in parts)
            if size * 2 > self._limits.memory_limit_bytes:
                raise SmartModuleMemoryLimit(
                    f"SmartModule {member.name!r} cannot take a {size:,}-byte input within the "
                    f"memory limit of {self._limits.memory_limit_bytes:,} bytes "
                    "(memory_limit_bytes): a record this large needs a higher limit",
                    module=member.name,
                    limit_bytes=self._limits.memory_limit_bytes,
                )
            raw = member.transform(parts, count)
            try:
                if i == last:
                    if self._all_filters:
                        records, pos = codec.match_records(raw, 0, batch)
                    else:
                        records, pos = codec.decode_records(raw, 0, batch)
                else:
                    pos, count = codec.skip_records(raw, 0)
                found, end = codec.decode_failure(raw, pos)
                if aggregate:
                    accumulator = codec.decode_accumulator(raw, end)
                    if accumulator is not None:
                        self._accumulators[i] = accumulator
            except codec.DecodeError as exc:
                raise SmartModuleOutputError(
                    f"SmartModule {member.name!r} returned output that cannot be decoded "
                    f"at ABI version {version}: {exc}",
                    module=member.name,
                ) from None
            if found is not None:
                # A later module's failure is earlier in the stream: it only saw records
                # that came before the earlier module's failing one.
                failure = (member.name, found)
            if i == last:
                out.extend(records)
            else:
                block = raw[:pos]
        return failure

    def _record_error(
        self,
        failure: tuple[str, codec.RecordFailure],
        batch: Batch,
        later: Sequence[Batch],
        out: list[OutputRecord],
    ) -> SmartModuleRecordError:
        name, f = failure
        remaining = [r for r in batch.records if r.offset > f.offset]
        for b in later:
            remaining.extend(b.records)
        where = f"{batch.topic}/{batch.partition}"
        return SmartModuleRecordError(
            f"SmartModule {name!r} failed on the record at offset {f.offset} of {where}: "
            f"{f.hint or 'no hint given'}",
            module=name,
            hint=f.hint,
            offset=f.offset,
            topic=batch.topic,
            partition=batch.partition,
            kind=f.kind,
            key=f.key,
            value=f.value,
            successes=out,
            remaining=remaining,
        )
