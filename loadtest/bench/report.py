"""Shared pieces of the benchmarks: percentiles, CPU accounting, the machine description,
table and JSON output.

Every table a benchmark prints is preceded (once per process) by a header naming the
machine, the versions of the stack and the load average when the benchmark started, so a
figure is never read without the conditions it was measured in.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Taken when the benchmark process starts (every benchmark imports this module first).
LOAD_AT_START: tuple[float, float, float] = os.getloadavg()
STACK = ("uvicorn", "starlette", "websockets", "msgspec", "uvloop", "httptools")
_header_printed = False


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class CpuMeter:
    """CPU time this process spent over a wall-clock interval, in cores (1.0: one busy core)."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def cores(self) -> float:
        elapsed = time.perf_counter() - self.wall
        return (time.process_time() - self.cpu) / elapsed if elapsed > 0 else 0.0


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of another process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessCpuMeter:
    """CPU of another process over a wall-clock interval, in cores; ``None`` when unknown."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu = process_cpu_seconds(pid) if pid else 0.0
        self.wall = time.perf_counter()

    def cores(self) -> float | None:
        if not self.pid:
            return None
        elapsed = time.perf_counter() - self.wall
        return (process_cpu_seconds(self.pid) - self.cpu) / elapsed if elapsed > 0 else 0.0


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    for name in STACK:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    stack = versions()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": stack.pop("python"),
        "platform": platform.platform(),
        "sqlite": stack.pop("sqlite"),
        "versions": stack,
        "load_at_start": [round(x, 2) for x in LOAD_AT_START],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def header() -> str:
    info = machine()
    stack = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    load = " ".join(f"{x:.2f}" for x in info["load_at_start"])
    return (
        f"machine: {info['cores']} cores, {info['cpu']}, {info['platform']}\n"
        f"versions: Python {info['python']}, SQLite {info['sqlite']}, {stack}\n"
        f"load average at start (1, 5, 15 min): {load}"
    )


def print_header() -> None:
    """Print the machine header unless this process already did."""
    global _header_printed
    if not _header_printed:
        _header_printed = True
        print(header(), flush=True)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print_header()
    print(f"\n{title}")
    if not rows:
        return
    columns = list(dict.fromkeys(c for row in rows for c in row))
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns), flush=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
