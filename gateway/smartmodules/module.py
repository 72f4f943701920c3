"""A loaded SmartModule: its compiled code and what its imports and exports make it.

Loading checks the contract a Fluvio SPU relies on, so that a module that would fail
there fails here at load time with a message saying what is missing: the ``memory``,
``alloc`` and transform exports with their signatures, and imports limited to
``copy_records`` (under any module name, as the SPU looks it up by name) and WASI
preview 1. The kind is the first transform export found in Fluvio's order; a manifest
may describe the module but cannot contradict its exports.
"""

from __future__ import annotations

from collections.abc import Sequence

import wasmtime

from gateway.smartmodules.abi import COPY_RECORDS, KIND_PROBE_ORDER, WASI_MODULE, Kind
from gateway.smartmodules.errors import SmartModuleLoadError
from gateway.smartmodules.manifest import Manifest
from gateway.smartmodules.params import ParamSpec


def _sig(ty: wasmtime.FuncType) -> str:
    params = ",".join(str(p) for p in ty.params)
    results = ",".join(str(r) for r in ty.results)
    return f"({params})->({results})"


_TRANSFORM_SIG = "(i32,i32,i32)->(i32)"
_ALLOC_SIG = "(i32)->(i32)"
_DEALLOC_SIG = "(i32,i32)->()"
_COPY_RECORDS_SIG = "(i32,i32)->()"


class SmartModule:
    """A compiled, checked SmartModule; instantiate it through a chain."""

    def __init__(
        self,
        *,
        name: str,
        digest: str,
        compiled: wasmtime.Module,
        kind: Kind,
        has_init: bool,
        has_look_back: bool,
        has_dealloc: bool,
        uses_wasi: bool,
        copy_records_modules: Sequence[str],
        description: str = "",
        params: Sequence[ParamSpec] | None = None,
        path: str | None = None,
    ) -> None:
        self.name = name
        self.digest = digest
        """sha256 of the wasm bytes, hex: identifies the code across restarts."""
        self.compiled = compiled
        self.kind = kind
        self.has_init = has_init
        self.has_look_back = has_look_back
        self.has_dealloc = has_dealloc
        self.uses_wasi = uses_wasi
        self.copy_records_modules = tuple(copy_records_modules)
        self.description = description
        self.params = None if params is None else tuple(params)
        """Declared params; ``None`` when the module has no manifest (any params)."""
        self.path = path

    def __repr__(self) -> str:
        return f"<SmartModule {self.name} {self.kind} {self.digest[:12]}>"


def inspect(
    name: str,
    digest: str,
    compiled: wasmtime.Module,
    manifest: Manifest | None,
    path: str | None = None,
) -> SmartModule:
    """Check ``compiled`` against the SmartModule contract and describe it."""

    def invalid(problem: str) -> SmartModuleLoadError:
        return SmartModuleLoadError(f"{name!r} is not a Fluvio SmartModule: {problem}", module=name)

    funcs: dict[str, str] = {}
    has_memory = False
    for export in compiled.exports:
        ty = export.type
        if isinstance(ty, wasmtime.FuncType):
            funcs[export.name] = _sig(ty)
        elif isinstance(ty, wasmtime.MemoryType) and export.name == "memory":
            has_memory = True

    kind = next((k for k in KIND_PROBE_ORDER if k.value in funcs), None)
    if kind is None:
        names = ", ".join(k.value for k in KIND_PROBE_ORDER)
        raise invalid(f"it exports none of the transform functions {names}")
    for func in (kind.value, "init", "look_back"):
        if func in funcs and funcs[func] != _TRANSFORM_SIG:
            raise invalid(f"export {func} has type {funcs[func]}, expected {_TRANSFORM_SIG}")
    if not has_memory:
        raise invalid("it does not export its memory as 'memory'")
    if funcs.get("alloc") != _ALLOC_SIG:
        raise invalid(f"it must export alloc with type {_ALLOC_SIG} for the host to pass input")

    copy_modules: list[str] = []
    uses_wasi = False
    for imp in compiled.imports:
        ty = imp.type
        if imp.name == COPY_RECORDS and isinstance(ty, wasmtime.FuncType):
            if _sig(ty) != _COPY_RECORDS_SIG:
                raise invalid(
                    f"its copy_records import has type {_sig(ty)}, expected {_COPY_RECORDS_SIG}"
                )
            if imp.module not in copy_modules:
                copy_modules.append(imp.module)
        elif imp.module == WASI_MODULE:
            uses_wasi = True
        else:
            raise invalid(
                f"it imports {imp.module}.{imp.name}, which a SmartModule host does not "
                f"provide (only copy_records and {WASI_MODULE})"
            )
    if not copy_modules:
        raise invalid("it does not import copy_records, through which a module returns output")

    if manifest is not None and manifest.kind != kind:
        raise invalid(f"its manifest says kind {manifest.kind} but its exports make it {kind}")

    return SmartModule(
        name=name,
        digest=digest,
        compiled=compiled,
        kind=kind,
        has_init="init" in funcs,
        has_look_back="look_back" in funcs,
        has_dealloc=funcs.get("dealloc") == _DEALLOC_SIG,
        uses_wasi=uses_wasi,
        copy_records_modules=copy_modules,
        description=manifest.description if manifest else "",
        params=manifest.params if manifest else None,
        path=path,
    )
