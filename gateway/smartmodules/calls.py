"""Calling a module's exports with as little per-call overhead as wasmtime-py allows.

``wasmtime.Func.__call__`` looks up the function's type and converts every argument
on each call, about 30 us for ``alloc``. A SmartModule call makes three or four such
calls (alloc, transform, dealloc), which would dominate small batches. Since every
export of the ABI takes and returns plain i32s, the engine binds each export once:
argument and result buffers are built up front and each call goes straight to
wasmtime's C function, about 3 us.

That uses wasmtime-py internals (``wasmtime._ffi``, ``Store._context``), so binding
falls back to the public API when they are not there or behave differently.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from collections.abc import Callable
from typing import Any

import wasmtime

log = logging.getLogger(__name__)

ExportCall = Callable[..., int]
"""Calls an export with i32 arguments; returns its i32 result (0 when it has none)."""


def _signed(value: int) -> int:
    return value - 0x1_0000_0000 if value >= 0x8000_0000 else value


class _PublicCall:
    __slots__ = ("_func", "_store")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func) -> None:
        self._store = store
        self._func = func

    def __call__(self, *args: int) -> int:
        result = self._func(self._store, *(_signed(a) for a in args))
        return int(result) if result is not None else 0


class _DirectCall:
    __slots__ = (
        "_call",
        "_ctx",
        "_fptr",
        "_nparams",
        "_nresults",
        "_params",
        "_raise_pending",
        "_results",
        "_store",
        "_trap_ptr",
    )

    def __init__(
        self, store: wasmtime.Store, func: wasmtime.Func, nparams: int, nresults: int
    ) -> None:
        ffi: Any = importlib.import_module("wasmtime._ffi")
        funcs: Any = importlib.import_module("wasmtime._func")
        self._store = store  # keeps the context pointer valid
        self._ctx = store._context()
        self._fptr = ctypes.byref(func._func)
        self._call = ffi.wasmtime_func_call
        self._trap_ptr = ctypes.POINTER(ffi.wasm_trap_t)
        self._raise_pending = funcs.maybe_raise_last_exn
        self._nparams = nparams
        self._nresults = nresults
        self._params = (ffi.wasmtime_val_t * max(nparams, 1))()
        self._results = (ffi.wasmtime_val_t * max(nresults, 1))()
        i32 = ffi.WASMTIME_I32.value
        for i in range(nparams):
            self._params[i].kind = i32

    def __call__(self, *args: int) -> int:
        params = self._params
        for i, arg in enumerate(args):
            params[i].of.i32 = arg - 0x1_0000_0000 if arg >= 0x8000_0000 else arg
        trap = self._trap_ptr()
        error = self._call(
            self._ctx,
            self._fptr,
            params,
            self._nparams,
            self._results,
            self._nresults,
            ctypes.byref(trap),
        )
        if error:
            self._raise_pending()
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            self._raise_pending()
            raise wasmtime.Trap._from_ptr(trap)
        return int(self._results[0].of.i32) if self._nresults else 0


def bind(store: wasmtime.Store, func: wasmtime.Func, *, direct: bool = True) -> ExportCall:
    """A fast callable for an export whose params and results are all i32."""
    if direct:
        ty = func.type(store)
        try:
            call = _DirectCall(store, func, len(ty.params), len(ty.results))
        except (AttributeError, ImportError, TypeError) as exc:
            log.debug("direct wasm calls unavailable, using the public API: %s", exc)
        else:
            return call
    return _PublicCall(store, func)
