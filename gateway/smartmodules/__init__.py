"""SmartModules: Fluvio-compatible WebAssembly filters, maps and aggregates.

The gateway runs the same ``.wasm`` SmartModules a Fluvio cluster runs, whenever its
log is not Fluvio. Public API:

- ``SmartModuleEngine``: loads modules (``load``) and builds chains (``chain``);
- ``ChainInstance.process(records) -> ChainOutput`` with ``OutputRecord``s;
- ``ChainSpec`` (``engine.spec(...)``/``chain.spec``): identifies identical chains;
- ``SmartModuleRegistry``: modules by name (the project's own plus configured
  directories) with their declared params;
- the ``SmartModuleError`` hierarchy.
"""

from gateway.smartmodules.abi import DEFAULT_VERSION, Kind
from gateway.smartmodules.batch import OutputRecord, PreparedInput
from gateway.smartmodules.chain import ChainInstance, ChainLink, ChainOutput, ChainSpec, ChainStats
from gateway.smartmodules.engine import SmartModuleEngine
from gateway.smartmodules.errors import (
    InvalidSmartModuleParams,
    SmartModuleClosed,
    SmartModuleError,
    SmartModuleFuelExhausted,
    SmartModuleHardError,
    SmartModuleInitError,
    SmartModuleLoadError,
    SmartModuleLookBackError,
    SmartModuleMemoryLimit,
    SmartModuleOutputError,
    SmartModuleRecordError,
    SmartModuleTrap,
    UnknownSmartModule,
)
from gateway.smartmodules.lookback import HistoryNeed, LookBack
from gateway.smartmodules.module import SmartModule
from gateway.smartmodules.params import ParamSpec
from gateway.smartmodules.registry import SmartModuleInfo, SmartModuleRegistry

__all__ = [
    "DEFAULT_VERSION",
    "ChainInstance",
    "ChainLink",
    "ChainOutput",
    "ChainSpec",
    "ChainStats",
    "HistoryNeed",
    "InvalidSmartModuleParams",
    "Kind",
    "LookBack",
    "OutputRecord",
    "ParamSpec",
    "PreparedInput",
    "SmartModule",
    "SmartModuleClosed",
    "SmartModuleEngine",
    "SmartModuleError",
    "SmartModuleFuelExhausted",
    "SmartModuleHardError",
    "SmartModuleInfo",
    "SmartModuleInitError",
    "SmartModuleLoadError",
    "SmartModuleLookBackError",
    "SmartModuleMemoryLimit",
    "SmartModuleOutputError",
    "SmartModuleRecordError",
    "SmartModuleRegistry",
    "SmartModuleTrap",
    "UnknownSmartModule",
]
