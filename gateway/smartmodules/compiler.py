"""Compiling SmartModules once: the wasmtime engine and the compiled-module caches.

Compiling a module takes 100 ms or more; instantiating a compiled one well under a
millisecond. Compiled modules are kept in memory by the sha256 of their wasm, and
serialized to a cache directory so that a restarted gateway deserializes them instead
of compiling again. A cache file is named after the wasm digest, the wasmtime version
and the machine, and a file wasmtime rejects (another version or configuration,
truncation) is simply recompiled and replaced.

The directory must only be writable by the gateway: wasmtime trusts a deserialized
module as native code.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import tempfile
import threading
from pathlib import Path

import wasmtime

from gateway.smartmodules.errors import SmartModuleLoadError

log = logging.getLogger(__name__)

WASMTIME_VERSION = importlib.metadata.version("wasmtime")


def make_wasmtime_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    # Fuel meters every call so a module that loops forever fails instead of hanging.
    config.consume_fuel = True
    return wasmtime.Engine(config)


class ModuleCompiler:
    """Turns wasm bytes into ``wasmtime.Module``s, at most once per process and digest."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: Path | None) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self._modules: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()
        self.compiled = 0
        """How many modules this compiler compiled (the rest came from a cache)."""
        self.deserialized = 0

    def cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        tag = f"wasmtime-{WASMTIME_VERSION}-{platform.machine()}"
        return self.cache_dir / f"{digest}.{tag}.cwasm"

    def get(self, wasm: bytes, digest: str, name: str) -> wasmtime.Module:
        with self._lock:
            module = self._modules.get(digest)
            if module is None:
                module = self._load_or_compile(wasm, digest, name)
                self._modules[digest] = module
            return module

    def _load_or_compile(self, wasm: bytes, digest: str, name: str) -> wasmtime.Module:
        path = self.cache_path(digest)
        if path is not None and path.is_file():
            try:
                # Read, not mapped (deserialize_file): a cache file truncated or
                # rewritten in place under a mapping would crash the process.
                module = wasmtime.Module.deserialize(self.engine, path.read_bytes())
            except (OSError, wasmtime.WasmtimeError) as exc:
                log.warning("ignoring compiled SmartModule cache %s: %s", path, exc)
            else:
                self.deserialized += 1
                return module
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            raise SmartModuleLoadError(
                f"SmartModule {name!r} is not a valid WebAssembly module: {first_line}",
                module=name,
            ) from None
        self.compiled += 1
        if path is not None:
            self._store(path, module)
        return module

    def _store(self, path: Path, module: wasmtime.Module) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(module.serialize())
                # Atomic: a concurrent reader sees the old file or the whole new one.
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("cannot write compiled SmartModule cache %s: %s", path, exc)
