"""The benchmark suite runs end to end in its quick mode (figures are not checked here:
speed goals live in docs/benchmarks.md, measured by full runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_suite_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = {p.stem for p in out.glob("*.json")}
    assert names == {
        "log_produce",
        "ws_gateway",
        "idle_connections",
        "smartmodule_throughput",
        "fanout_chains",
        "memory_pipeline",
    }
    for path in out.glob("*.json"):
        report = json.loads(path.read_text())
        assert report["machine"]["cores"] >= 1, path
