"""SmartModule manifests: ``smartmodule.toml`` beside a module's source, copied to
``<name>.toml`` beside its built ``<name>.wasm``.

A manifest gives a module's name, kind, description and declared params::

    name = "event-filter"
    kind = "filter"
    description = "..."

    [[params]]
    name = "min_importance"
    type = "float"          # string | int | float | bool | list
    default = "0.7"
    minimum = 0
    maximum = 1
    description = "..."

Without a ``params`` key a module accepts any params; ``params = []`` accepts none.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from gateway.smartmodules.abi import Kind
from gateway.smartmodules.errors import SmartModuleLoadError
from gateway.smartmodules.params import ParamSpec


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    kind: Kind
    description: str = ""
    params: tuple[ParamSpec, ...] | None = None


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return msgspec.convert(data, Manifest)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise SmartModuleLoadError(f"SmartModule manifest {path} is invalid: {exc}") from None


def manifest_beside(wasm_path: Path) -> Manifest | None:
    """The manifest ``<stem>.toml`` next to a ``.wasm`` file, if there is one."""
    path = wasm_path.with_suffix(".toml")
    return load_manifest(path) if path.is_file() else None
