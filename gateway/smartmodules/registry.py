"""SmartModules known by name, with what they are and which params they accept.

The registry scans the project's own modules (``smartmodules/dist`` of the repository,
each ``<name>.wasm`` with its manifest ``<name>.toml``) and then every ``.wasm`` file of
the configured directories; a module found later replaces an earlier one of the same
name, so a deployment can override a built-in module. A module without a manifest is
named after its file, gets its kind from its exports and accepts any params.

Subscriptions name their chain as ``filters: [{"smartmodule": NAME, "params": {...}}]``;
``links``/``chain``/``spec`` turn that into engine objects, checking every param.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway.smartmodules.abi import KIND_PROBE_ORDER, Kind
from gateway.smartmodules.chain import ChainInstance, ChainLink, ChainSpec
from gateway.smartmodules.engine import SmartModuleEngine
from gateway.smartmodules.errors import (
    InvalidSmartModuleParams,
    SmartModuleError,
    UnknownSmartModule,
)
from gateway.smartmodules.lookback import LookBack
from gateway.smartmodules.manifest import Manifest, manifest_beside
from gateway.smartmodules.module import SmartModule
from gateway.smartmodules.params import ParamError, ParamSpec, validate
from gateway.smartmodules.wasm import NotWasm, exported_functions

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "smartmodules" / "dist"
"""The project's own modules, built by ``make -C smartmodules`` and committed."""


class SmartModuleInfo(msgspec.Struct, frozen=True):
    name: str
    kind: Kind
    description: str
    params: tuple[ParamSpec, ...] | None
    """Declared params; ``None``: no manifest, any params are passed on."""
    path: str
    builtin: bool


class _Filter(msgspec.Struct, forbid_unknown_fields=True):
    smartmodule: str
    params: dict[str, Any] = {}
    aggregate_initial: str | None = None
    look_back: LookBack | None = None


class SmartModuleRegistry:
    def __init__(
        self,
        engine: SmartModuleEngine,
        directories: Sequence[str | Path] = (),
        *,
        builtin_dir: str | Path | None = BUILTIN_DIR,
    ) -> None:
        self.engine = engine
        self.builtin_dir = Path(builtin_dir) if builtin_dir is not None else None
        self.directories = [Path(d) for d in directories]
        self._infos: dict[str, SmartModuleInfo] | None = None
        self._manifests: dict[str, Manifest | None] = {}

    # -- discovery --------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan the directories again (new, changed or removed files)."""
        infos: dict[str, SmartModuleInfo] = {}
        manifests: dict[str, Manifest | None] = {}
        sources = [(self.builtin_dir, True)] if self.builtin_dir is not None else []
        sources += [(d, False) for d in self.directories]
        for directory, builtin in sources:
            if not directory.is_dir():
                if not builtin:
                    log.warning("SmartModule directory %s does not exist", directory)
                continue
            for path in sorted(directory.glob("*.wasm")):
                try:
                    info, manifest = self._describe(path, builtin)
                except (SmartModuleError, NotWasm, OSError) as exc:
                    log.warning("skipping SmartModule %s: %s", path, exc)
                    continue
                if info.name in infos:
                    log.warning(
                        "SmartModule %s from %s replaces the one from %s",
                        info.name,
                        path,
                        infos[info.name].path,
                    )
                infos[info.name] = info
                manifests[info.name] = manifest
        self._infos = infos
        self._manifests = manifests

    @staticmethod
    def _describe(path: Path, builtin: bool) -> tuple[SmartModuleInfo, Manifest | None]:
        manifest = manifest_beside(path)
        if manifest is not None:
            info = SmartModuleInfo(
                manifest.name,
                manifest.kind,
                manifest.description,
                manifest.params,
                str(path),
                builtin,
            )
            return info, manifest
        exports = exported_functions(path.read_bytes())
        kind = next((k for k in KIND_PROBE_ORDER if k.value in exports), None)
        if kind is None:
            raise NotWasm("it exports no SmartModule transform (filter, map, ...)")
        return SmartModuleInfo(path.stem, kind, "", None, str(path), builtin), None

    def _all(self) -> dict[str, SmartModuleInfo]:
        if self._infos is None:
            self.refresh()
        assert self._infos is not None
        return self._infos

    def list(self) -> builtins.list[SmartModuleInfo]:
        return sorted(self._all().values(), key=lambda info: info.name)

    def info(self, name: str) -> SmartModuleInfo:
        infos = self._all()
        info = infos.get(name)
        if info is None:
            known = ", ".join(sorted(infos)) or "none"
            raise UnknownSmartModule(
                f"unknown SmartModule {name!r}; known SmartModules: {known}", module=name
            )
        return info

    def load(self, name: str) -> SmartModule:
        info = self.info(name)
        return self.engine.load(info.path, name=info.name, manifest=self._manifests.get(name))

    def resolve(self, name_or_path: str | Path) -> SmartModule:
        """A registered module by name, else a ``.wasm`` file by path."""
        text = str(name_or_path)
        if text in self._all():
            return self.load(text)
        path = Path(text)
        if path.suffix == ".wasm" or path.is_file():
            return self.engine.load(path)
        return self.load(text)  # raises UnknownSmartModule listing the known names

    # -- chains from subscription filters ---------------------------------------------

    def validate(self, name: str, params: Mapping[str, object]) -> dict[str, str]:
        """Check params against what module ``name`` declares; returns the string map."""
        info = self.info(name)
        try:
            return validate(name, info.params, params)
        except ParamError as exc:
            raise InvalidSmartModuleParams(str(exc), module=name, param=exc.param) from None

    def links(self, filters: Sequence[Mapping[str, Any]]) -> builtins.list[ChainLink]:
        """Chain links for ``[{"smartmodule": NAME, "params": {...}}, ...]``.

        An entry may also carry ``aggregate_initial`` (a string) and ``look_back``
        (``{"last": N, "age_ms": MS}``).
        """
        links = []
        for i, entry in enumerate(filters):
            try:
                spec = msgspec.convert(entry, _Filter)
            except msgspec.ValidationError as exc:
                raise InvalidSmartModuleParams(
                    f"filters[{i}] is not a SmartModule invocation: {exc} "
                    '(expected {"smartmodule": NAME, "params": {...}})'
                ) from None
            module = self.load(spec.smartmodule)
            links.append(
                ChainLink(
                    module,
                    spec.params,
                    look_back=spec.look_back,
                    aggregate_initial=spec.aggregate_initial,
                )
            )
        return links

    def chain(
        self, filters: Sequence[Mapping[str, Any]], *, aggregate_initial: bytes | str | None = None
    ) -> ChainInstance:
        return self.engine.chain(self.links(filters), aggregate_initial=aggregate_initial)

    def spec(
        self, filters: Sequence[Mapping[str, Any]], *, aggregate_initial: bytes | str | None = None
    ) -> ChainSpec:
        return self.engine.spec(self.links(filters), aggregate_initial=aggregate_initial)
