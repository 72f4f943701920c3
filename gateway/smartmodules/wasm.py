"""Reading a wasm binary's exported function names without compiling it.

Listing a directory of SmartModules should not compile each one (100 ms or more), and
the kind of a module is decided by its exports alone.
"""

from __future__ import annotations

_MAGIC = b"\x00asm"
_EXPORT_SECTION = 7
_FUNC = 0


class NotWasm(ValueError):
    pass


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise NotWasm("truncated LEB128 number")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 35:
            raise NotWasm("LEB128 number too long")


def exported_functions(wasm: bytes) -> list[str]:
    """Names of the functions a core wasm module exports, in declaration order."""
    if wasm[:4] != _MAGIC or len(wasm) < 8:
        raise NotWasm("not a WebAssembly binary (no \\0asm header)")
    if wasm[4:8] != b"\x01\x00\x00\x00":
        raise NotWasm("not a core WebAssembly module (a component or unknown version)")
    pos = 8
    while pos < len(wasm):
        section = wasm[pos]
        size, pos = _leb(wasm, pos + 1)
        end = pos + size
        if end > len(wasm):
            raise NotWasm("section runs past the end of the file")
        if section == _EXPORT_SECTION:
            names: list[str] = []
            count, pos = _leb(wasm, pos)
            for _ in range(count):
                length, pos = _leb(wasm, pos)
                name = wasm[pos : pos + length].decode(errors="replace")
                pos += length
                if pos >= end:
                    raise NotWasm("export entry runs past its section")
                kind = wasm[pos]
                _, pos = _leb(wasm, pos + 1)
                if kind == _FUNC:
                    names.append(name)
            return names
        pos = end
    return []
