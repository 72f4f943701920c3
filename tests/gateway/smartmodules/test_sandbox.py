"""Limits and failures: traps, endless loops, runaway memory, bad output, recycling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sm_helpers import DIST, FIXTURES, event, make_records, values

from gateway.smartmodules import (
    SmartModule,
    SmartModuleClosed,
    SmartModuleEngine,
    SmartModuleError,
    SmartModuleFuelExhausted,
    SmartModuleHardError,
    SmartModuleMemoryLimit,
    SmartModuleOutputError,
    SmartModuleTrap,
)

Load = Callable[[str], SmartModule]


def test_trap_fails_the_call_and_the_next_call_works(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([(fixture_module("sdk_misbehave"), {"keep": "a"})])
    with pytest.raises(SmartModuleTrap) as caught:
        chain.process(make_records(["a1", "panic"]))
    error = caught.value
    assert error.module == "sdk_misbehave" and error.code == "smartmodule_trap"
    assert error.trap_code == "UNREACHABLE"
    assert "'sdk_misbehave' trapped in filter" in str(error) and "panicked" in str(error)
    # Recycled: fresh instances, init re-ran with the same params.
    assert values(chain.process(make_records(["a2", "b", "a3"])).records) == [b"a2", b"a3"]
    assert chain.stats.recycles == 1 and chain.stats.hard_errors == 1


def test_endless_loop_runs_out_of_fuel(engine: SmartModuleEngine, fixture_module: Load) -> None:
    chain = engine.chain([fixture_module("sdk_misbehave")])
    with pytest.raises(SmartModuleFuelExhausted) as caught:
        chain.process(make_records(["ok", "loop"]))
    budget = engine.limits.fuel + 2 * engine.limits.fuel_per_record
    assert budget < caught.value.fuel < budget + 1000 * engine.limits.fuel_per_byte
    budget = caught.value.fuel
    assert f"{budget:,}" in str(caught.value) and "'sdk_misbehave'" in str(caught.value)
    assert values(chain.process(make_records(["ok"])).records) == [b"ok"]


def test_runaway_allocation_hits_the_memory_limit(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_misbehave")])
    with pytest.raises(SmartModuleMemoryLimit) as caught:
        chain.process(make_records(["grow"]))
    assert caught.value.limit_bytes == 32 * 1024 * 1024
    assert "33,554,432" in str(caught.value) and "memory_limit_bytes" in str(caught.value)
    assert values(chain.process(make_records(["fine"])).records) == [b"fine"]
    assert chain.memory_bytes() < 4 * 1024 * 1024


def test_a_record_too_large_for_the_memory_limit_fails_before_the_call(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_map")])
    with pytest.raises(SmartModuleMemoryLimit, match="needs a higher limit"):
        chain.process(make_records([b"x" * (20 * 1024 * 1024)]))
    assert values(chain.process(make_records(["y"])).records) == [b"Y"]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("fail", SmartModuleHardError, r"status -44 \(ParsingExtraParams\)"),
        ("garbage", SmartModuleOutputError, "cannot be decoded"),
        ("silent", SmartModuleOutputError, "without calling copy_records"),
        ("outside", SmartModuleOutputError, "outside its memory"),
    ],
)
def test_bad_statuses_and_outputs_are_hard_errors(
    engine: SmartModuleEngine,
    fixture_module: Load,
    value: str,
    error: type[SmartModuleError],
    message: str,
) -> None:
    chain = engine.chain([fixture_module("sdk_misbehave")])
    with pytest.raises(error, match=message) as caught:
        chain.process(make_records([value]))
    assert caught.value.module == "sdk_misbehave"
    assert values(chain.process(make_records(["next"])).records) == [b"next"]


def test_negative_status_is_reported_with_its_code(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_misbehave")])
    with pytest.raises(SmartModuleHardError) as caught:
        chain.process(make_records(["fail"]))
    assert caught.value.status == -44


def test_other_chains_keep_working(engine: SmartModuleEngine, fixture_module: Load) -> None:
    bad = engine.chain([fixture_module("sdk_misbehave")])
    good = engine.chain([(engine.load(DIST / "event-filter.wasm"), {"min_importance": 0.5})])
    records = make_records([event(importance=0.9)])
    for _ in range(3):
        with pytest.raises(SmartModuleTrap):
            bad.process(make_records(["panic"]))
        assert len(good.process(records).records) == 1
    assert good.stats.recycles == 0


def test_hard_error_rolls_back_the_whole_call(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_misbehave"), fixture_module("sdk_aggregate")])
    assert chain.process(make_records(["1", "2"])).accumulator == b"3"
    # Two partitions make two batches: the first one passes, the second one traps.
    records = make_records(["5"], partition=0) + make_records(["panic"], partition=1)
    with pytest.raises(SmartModuleTrap):
        chain.process(records)
    assert chain.process(make_records(["1"])).accumulator == b"4"


def test_closed_chain_refuses_work(engine: SmartModuleEngine, fixture_module: Load) -> None:
    with engine.chain([fixture_module("sdk_map")]) as chain:
        chain.process(make_records(["a"]))
    with pytest.raises(SmartModuleClosed):
        chain.process(make_records(["a"]))


def test_calls_from_several_threads_are_serialized(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_aggregate")])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                chain.process(make_records(["1"] * 10))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert chain.process(make_records(["0"])).accumulator == b"1000"


def test_init_trap_is_an_init_error(tmp_path: Path) -> None:
    from sm_helpers import wat

    from gateway.smartmodules import SmartModuleInitError

    engine = SmartModuleEngine(tmp_path)
    module = engine.load(
        wat(
            '(module (import "env" "copy_records" (func (param i32 i32)))(memory (export "memory") 1)'
            '(func (export "init") (param i32 i32 i32) (result i32) unreachable)'
            '(func (export "filter") (param i32 i32 i32) (result i32) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 1024))'
        ),
        name="trapinit",
    )
    with pytest.raises(SmartModuleInitError, match="'trapinit' trapped in init"):
        engine.chain([module])


def test_fixtures_exist() -> None:
    assert (FIXTURES / "sdk_misbehave.wasm").is_file()
