"""One module instantiated in a chain's store, and the calling sequence of the ABI.

Every call goes the same way: ``alloc`` room for the input, copy the input in, call the
export with ``(ptr, len, version)``, then read the ``(ptr, len)`` the module handed to
``copy_records`` and copy that output out. Unlike a Fluvio SPU, the engine then calls
``dealloc(ptr, len)`` when the module exports it: SDK-built modules leak every output
buffer otherwise. Each call runs on a fresh fuel budget, and wasmtime failures are
turned into the engine's errors here, naming the module and the limit involved.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence

import wasmtime

from gateway.smartmodules import abi, codec
from gateway.smartmodules.calls import ExportCall, bind
from gateway.smartmodules.errors import (
    SmartModuleError,
    SmartModuleFuelExhausted,
    SmartModuleHardError,
    SmartModuleInitError,
    SmartModuleLookBackError,
    SmartModuleMemoryLimit,
    SmartModuleOutputError,
    SmartModuleTrap,
)
from gateway.smartmodules.lookback import LookBack
from gateway.smartmodules.module import SmartModule


class OutputSlot:
    """Where ``copy_records`` leaves the (ptr, len) of a module's output."""

    __slots__ = ("len", "ptr", "set")

    def __init__(self) -> None:
        self.ptr = 0
        self.len = 0
        self.set = False

    def clear(self) -> None:
        self.set = False

    def copy_records(self, ptr: int, length: int) -> None:
        self.ptr = ptr & 0xFFFF_FFFF
        self.len = length & 0xFFFF_FFFF
        self.set = True


class Limits:
    """The sandbox of a chain: fuel per call and the store's memory cap."""

    __slots__ = ("fuel", "fuel_per_byte", "fuel_per_record", "memory_limit_bytes")

    def __init__(
        self, fuel: int, fuel_per_record: int, fuel_per_byte: int, memory_limit_bytes: int
    ) -> None:
        self.fuel = fuel
        self.fuel_per_record = fuel_per_record
        self.fuel_per_byte = fuel_per_byte
        self.memory_limit_bytes = memory_limit_bytes

    def budget(self, records: int, size: int) -> int:
        """Fuel for one call: a base, plus room that grows with the input."""
        return self.fuel + self.fuel_per_record * records + self.fuel_per_byte * size


def _trap_reason(exc: Exception) -> str:
    # wasmtime's message is a backtrace followed by "Caused by:" and the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class ModuleInstance:
    """A module's instance inside a chain's store, with its exports bound for calling."""

    def __init__(
        self,
        module: SmartModule,
        store: wasmtime.Store,
        instance: wasmtime.Instance,
        slot: OutputSlot,
        limits: Limits,
        version: int,
        direct_calls: bool,
    ) -> None:
        self.module = module
        self.store = store
        self.slot = slot
        self.limits = limits
        self.version = version
        exports = instance.exports(store)
        memory = exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

        def export(name: str) -> ExportCall | None:
            func = exports.get(name)
            if not isinstance(func, wasmtime.Func):
                return None
            return bind(store, func, direct=direct_calls)

        alloc = export("alloc")
        transform = export(module.kind.value)
        assert alloc is not None and transform is not None  # checked when loaded
        self._alloc = alloc
        self._transform = transform
        self._init = export("init") if module.has_init else None
        self._look_back = export("look_back") if module.has_look_back else None
        self._dealloc = export("dealloc") if module.has_dealloc else None
        self.last_budget = 0
        self.size = -1
        """Memory size in bytes as of the end of the last call."""
        self._base = 0
        self._refresh()

    @property
    def name(self) -> str:
        return self.module.name

    def memory_bytes(self) -> int:
        return self._refresh()

    def _refresh(self) -> int:
        """The memory's current size; re-reads its address when the size changed, since
        a memory may move only when it grows."""
        size = int(self.memory.data_len(self.store))
        if size != self.size:
            self.size = size
            self._base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        return size

    # -- the calling sequence -------------------------------------------------------------

    def _call(self, export: ExportCall, parts: Sequence[bytes], records: int) -> tuple[int, bytes]:
        """Run one export on the concatenation of ``parts``; returns (status, output).

        The output is empty when the module did not call ``copy_records``. Raises
        ``wasmtime.Trap``/``WasmtimeError`` (mapped by the callers) and
        ``SmartModuleHardError`` for out-of-bounds pointers.
        """
        total = sum(len(p) for p in parts)
        store = self.store
        budget = self.limits.budget(records, total)
        self.last_budget = budget
        store.set_fuel(budget)
        ptr = self._alloc(total) & 0xFFFF_FFFF
        size = self._refresh()
        if ptr + total > size:
            raise SmartModuleHardError(
                f"SmartModule {self.name!r} returned an input buffer outside its memory "
                f"from alloc({total})",
                module=self.name,
            )
        at = self._base + ptr
        for part in parts:
            ctypes.memmove(at, part, len(part))
            at += len(part)
        slot = self.slot
        slot.clear()
        status = export(ptr, total, self.version)
        output = b""
        if slot.set:
            out_ptr, out_len = slot.ptr, slot.len
            if out_ptr + out_len > self._refresh():
                raise SmartModuleOutputError(
                    f"SmartModule {self.name!r} passed copy_records a buffer outside its memory",
                    module=self.name,
                )
            output = ctypes.string_at(self._base + out_ptr, out_len)
            if self._dealloc is not None:
                self._dealloc(out_ptr, out_len)
        return status, output

    def hard_error(self, exc: Exception, what: str, records: int) -> SmartModuleHardError:
        """The engine's error for a wasmtime failure during ``what``."""
        name = self.name
        if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            budget = self.last_budget
            return SmartModuleFuelExhausted(
                f"SmartModule {name!r} ran out of fuel in {what}: it used its whole budget of "
                f"{budget:,} units for {records} record(s) (fuel + fuel_per_record x records + "
                "fuel_per_byte x input bytes). It may loop forever; otherwise raise the "
                "engine's fuel settings",
                module=name,
                fuel=budget,
            )
        limit = self.limits.memory_limit_bytes
        used = self.memory_bytes()
        if isinstance(exc, wasmtime.Trap) and used * 2 >= limit:
            # A grow beyond the store limit just fails, and a Rust module then aborts:
            # a trap while memory is this close to the cap is taken as hitting it.
            return SmartModuleMemoryLimit(
                f"SmartModule {name!r} trapped in {what} with {used:,} bytes of memory in use, "
                f"near the limit of {limit:,} bytes (memory_limit_bytes): it needs more "
                "memory than allowed. Send smaller batches or raise memory_limit_bytes",
                module=name,
                limit_bytes=limit,
            )
        if isinstance(exc, wasmtime.ExitTrap):
            return SmartModuleTrap(
                f"SmartModule {name!r} called WASI proc_exit({exc.code}) in {what}",
                module=name,
                trap_code="exit",
            )
        reason = _trap_reason(exc)
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        if code == wasmtime.TrapCode.UNREACHABLE:
            reason += " (a Rust module panicked or aborted)"
        return SmartModuleTrap(
            f"SmartModule {name!r} trapped in {what}: {reason}",
            module=name,
            trap_code=code.name if code is not None else None,
        )

    def transform(self, parts: Sequence[bytes], records: int) -> bytes:
        """Run the transform on an encoded input; returns its raw output."""
        try:
            status, output = self._call(self._transform, parts, records)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise self.hard_error(exc, self.module.kind.value, records) from None
        if status < 0:
            name = abi.status_name(abi.TRANSFORM_STATUS, status)
            raise SmartModuleHardError(
                f"SmartModule {self.name!r} failed with status {status} ({name}) on a batch of "
                f"{records} record(s)" + _status_fix(status, self.version),
                module=self.name,
                status=status,
            )
        if not output:
            raise SmartModuleOutputError(
                f"SmartModule {self.name!r} returned without calling copy_records: a transform "
                "must always hand its output to the host",
                module=self.name,
            )
        return output

    def init(self, params: Mapping[str, str], look_back: LookBack | None) -> None:
        if self._init is None:
            return
        try:
            payload = codec.encode_init(params, look_back, self.version)
        except ValueError as exc:
            raise SmartModuleInitError(
                f"SmartModule {self.name!r}: {exc}", module=self.name, status=None
            ) from None
        try:
            status, output = self._call(self._init, (payload,), 0)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            error = self.hard_error(exc, "init", 0)
            raise SmartModuleInitError(str(error), module=self.name, status=None) from None
        except SmartModuleError as exc:
            raise SmartModuleInitError(str(exc), module=self.name, status=None) from None
        if status == 0:
            return
        hint = codec.decode_hint(output) if status == abi.INIT_ERROR_WITH_HINT else ""
        detail = hint or abi.status_name(abi.INIT_STATUS, status)
        raise SmartModuleInitError(
            f"SmartModule {self.name!r} refused its params: {detail}",
            module=self.name,
            status=status,
            hint=hint,
        )

    def look_back(self, parts: Sequence[bytes], records: int) -> None:
        if self._look_back is None:
            return
        try:
            status, output = self._call(self._look_back, parts, records)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            error = self.hard_error(exc, "look_back", records)
            raise SmartModuleLookBackError(str(error), module=self.name, status=None) from None
        except SmartModuleError as exc:
            raise SmartModuleLookBackError(str(exc), module=self.name, status=None) from None
        if status >= 0:
            return
        hint, offset = "", None
        if status == abi.LOOK_BACK_ERROR_WITH_DETAILS:
            hint, offset = codec.decode_look_back_failure(output)
        at = f" at offset {offset}" if offset is not None else ""
        detail = hint or abi.status_name(abi.LOOK_BACK_STATUS, status)
        raise SmartModuleLookBackError(
            f"SmartModule {self.name!r} failed in look_back{at}: {detail}",
            module=self.name,
            status=status,
            hint=hint,
            offset=offset,
        )


def _status_fix(status: int, version: int) -> str:
    if status in (-11, -22):
        return (
            f": it could not decode its input; check that it supports ABI version {version} "
            "(set the engine's version to what it was built for)"
        )
    return ""
