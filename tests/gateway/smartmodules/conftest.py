"""Fixtures for the SmartModule engine tests: real modules on real wasmtime.

Modules come from three places: the project's own (``smartmodules/dist``), Rust test
fixtures built by ``make -C smartmodules fixtures`` (``fixtures/*.wasm``, sources in
``fixtures/rust``) and small WAT modules compiled by the tests with ``wasmtime.wat2wasm``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sm_helpers import FIXTURES

from gateway.smartmodules import SmartModule, SmartModuleEngine, SmartModuleRegistry


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compilation cache for the session: each module is compiled once."""
    return tmp_path_factory.mktemp("smartmodule-cache")


@pytest.fixture
def engine(compiled_cache: Path) -> SmartModuleEngine:
    # Small budgets keep the failing cases fast.
    return SmartModuleEngine(
        compiled_cache,
        fuel=50_000_000,
        fuel_per_record=1_000_000,
        memory_limit_bytes=32 * 1024 * 1024,
    )


@pytest.fixture
def registry(engine: SmartModuleEngine) -> SmartModuleRegistry:
    return SmartModuleRegistry(engine)


@pytest.fixture
def fixture_module(engine: SmartModuleEngine) -> Callable[[str], SmartModule]:
    def load(name: str) -> SmartModule:
        return engine.load(FIXTURES / f"{name}.wasm")

    return load
