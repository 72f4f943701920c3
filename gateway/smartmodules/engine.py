"""The SmartModule engine: load modules once, build chains that run them.

The engine plays the part of a Fluvio SPU for the gateway's own stream log, running the
same ``.wasm`` files on wasmtime. It is synchronous CPU work: a caller on an asyncio
loop calls it directly for small batches, or through a worker thread for large ones
(``asyncio.to_thread(chain.process, records)``).

    engine = SmartModuleEngine(data_dir / "smartmodule-cache")
    module = engine.load("smartmodules/dist/event-filter.wasm")
    chain = engine.chain([(module, {"min_importance": 0.8})])
    output = chain.process(records)          # -> ChainOutput(records=[OutputRecord...])
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import wasmtime

from gateway.smartmodules.abi import DEFAULT_VERSION, SUPPORTED_VERSIONS
from gateway.smartmodules.batch import PreparedInput, prepare
from gateway.smartmodules.chain import ChainInstance, ChainLink, ChainSpec
from gateway.smartmodules.compiler import ModuleCompiler, make_wasmtime_engine
from gateway.smartmodules.errors import SmartModuleLoadError
from gateway.smartmodules.instance import Limits
from gateway.smartmodules.manifest import Manifest, manifest_beside
from gateway.smartmodules.module import SmartModule, inspect
from gateway.streamlog.interface import Record

DEFAULT_FUEL = 100_000_000
"""Fuel for one call, whatever its size (fuel counts wasm instructions, roughly)."""
DEFAULT_FUEL_PER_RECORD = 1_000_000
"""Added per input record: tens of times what the project's modules need for a 1 KB event."""
DEFAULT_FUEL_PER_BYTE = 1_000
"""Added per input byte, so huge values get room: the project's modules use 60 to 160."""
DEFAULT_MEMORY_LIMIT_BYTES = 128 * 1024 * 1024
"""Cap of each module's linear memory."""

LinkLike: TypeAlias = ChainLink | SmartModule | tuple[SmartModule, Mapping[str, object] | None]


class SmartModuleEngine:
    """Loads SmartModules and builds chains with one sandbox configuration.

    ``cache_dir`` keeps compiled modules across restarts (``None``: memory only).
    ``fuel`` + ``fuel_per_record`` x records + ``fuel_per_byte`` x input bytes is the
    fuel budget of each call;
    ``memory_limit_bytes`` caps each module's memory. ``version`` is the ABI version
    passed to modules (see ``abi.DEFAULT_VERSION``). Input is cut into batches of at
    most ``max_batch_bytes`` encoded bytes; a chain whose memory grows past
    ``recycle_memory_bytes`` is re-instantiated between calls.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        fuel: int = DEFAULT_FUEL,
        fuel_per_record: int = DEFAULT_FUEL_PER_RECORD,
        fuel_per_byte: int = DEFAULT_FUEL_PER_BYTE,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        version: int = DEFAULT_VERSION,
        max_batch_bytes: int | None = None,
        recycle_memory_bytes: int | None = None,
        direct_calls: bool = True,
    ) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"SmartModule ABI version {version} is not supported; use one of "
                f"{SUPPORTED_VERSIONS.start}..{SUPPORTED_VERSIONS.stop - 1}"
            )
        if fuel <= 0 or fuel_per_record < 0 or fuel_per_byte < 0:
            raise ValueError(
                "fuel must be positive, fuel_per_record and fuel_per_byte not negative"
            )
        if memory_limit_bytes < 1024 * 1024:
            raise ValueError("memory_limit_bytes must be at least 1 MiB")
        self.limits = Limits(fuel, fuel_per_record, fuel_per_byte, memory_limit_bytes)
        self.version = version
        self.max_batch_bytes = max_batch_bytes or min(8 * 1024 * 1024, memory_limit_bytes // 8)
        self.recycle_memory_bytes = recycle_memory_bytes or memory_limit_bytes // 2
        self.direct_calls = direct_calls
        self.wasm_engine: wasmtime.Engine = make_wasmtime_engine()
        self.compiler = ModuleCompiler(
            self.wasm_engine, Path(cache_dir) if cache_dir is not None else None
        )
        self._modules: dict[tuple[str, str, Manifest | None], SmartModule] = {}

    def load(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        manifest: Manifest | None = None,
    ) -> SmartModule:
        """Load a module from a ``.wasm`` path or bytes; compiled at most once.

        For a path, a manifest ``<stem>.toml`` beside it is used unless one is given;
        the name defaults to the manifest's, else the file stem.
        """
        path: str | None = None
        if isinstance(source, bytes | bytearray):
            wasm = bytes(source)
        else:
            file = Path(source)
            try:
                wasm = file.read_bytes()
            except OSError as exc:
                raise SmartModuleLoadError(
                    f"cannot read SmartModule {file}: {exc.strerror or exc}", module=file.stem
                ) from None
            path = str(file)
            if manifest is None and file.suffix == ".wasm":
                manifest = manifest_beside(file)
            if name is None:
                name = manifest.name if manifest else file.stem
        digest = hashlib.sha256(wasm).hexdigest()
        if name is None:
            name = manifest.name if manifest else f"sha256:{digest[:12]}"
        key = (digest, name, manifest)
        module = self._modules.get(key)
        if module is None:
            compiled = self.compiler.get(wasm, digest, name)
            module = inspect(name, digest, compiled, manifest, path)
            self._modules[key] = module
        return module

    def links(
        self, links: Sequence[LinkLike], aggregate_initial: bytes | str | None = None
    ) -> list[ChainLink]:
        """Normalize chain members; ``aggregate_initial`` fills in for aggregate links
        that have none of their own."""
        result = []
        for item in links:
            if isinstance(item, ChainLink):
                link = item
            elif isinstance(item, SmartModule):
                link = ChainLink(item)
            else:
                module, params = item
                link = ChainLink(module, params)
            if link.aggregate_initial is None and aggregate_initial is not None:
                link = ChainLink(
                    link.module,
                    link.params,
                    look_back=link.look_back,
                    aggregate_initial=aggregate_initial,
                )
            result.append(link)
        return result

    def chain(
        self, links: Sequence[LinkLike], *, aggregate_initial: bytes | str | None = None
    ) -> ChainInstance:
        """Instantiate a chain (its own store and instances) and run each ``init``.

        Raises ``InvalidSmartModuleParams`` or ``SmartModuleInitError`` when a module
        does not accept its params.
        """
        return ChainInstance(
            self.wasm_engine,
            self.links(links, aggregate_initial),
            limits=self.limits,
            version=self.version,
            max_batch_bytes=self.max_batch_bytes,
            recycle_memory_bytes=self.recycle_memory_bytes,
            direct_calls=self.direct_calls,
        )

    def spec(
        self, links: Sequence[LinkLike], *, aggregate_initial: bytes | str | None = None
    ) -> ChainSpec:
        """The identity of the chain ``chain(links)`` would build, without building it."""
        return ChainSpec.of(self.links(links, aggregate_initial), self.version)

    def prepare(self, records: Sequence[Record]) -> PreparedInput:
        """Encode records once for several chains (``chain.process(prepared)``)."""
        return prepare(records, self.max_batch_bytes)
