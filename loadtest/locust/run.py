"""Run the locust load test headless against a running gateway; reports go to a folder.

    python -m loadtest.locust.run --host http://127.0.0.1:8080 --shape steady \\
        --users 20 --duration 60s [--report-dir DIR] [locust or loadtest options ...]

Options this command does not know are passed to locust, e.g. ``--identities 4``,
``--think-time 0.1``, ``--publish-window 64``, ``--loglevel DEBUG`` (see docs/loadtest.md).
Writes ``locust_stats.csv``, ``locust_failures.csv``, ``locust_exceptions.csv``,
``locust_stats_history.csv``, ``report.html`` and ``command.txt`` into the report folder,
prints the WebSocket and delivery rows, and exits with locust's status (1 when any
request failed). This module does not import locust: locust runs in a child process.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
SHAPES = ("steady", "ramp", "spike", "none")
SHAPE_VARIABLE = "AGENTMEM_LOADTEST_SHAPE"
CSV_PREFIX = "locust"


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.locust.run",
        description="Headless locust load test of a running gateway.",
        epilog="Other options are passed to locust (see docs/loadtest.md).",
    )
    parser.add_argument("--host", default="http://127.0.0.1:8080", help="the gateway's URL")
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="steady",
        help="load shape preset; none: locust's plain --users/--spawn-rate (default steady)",
    )
    parser.add_argument("--users", type=int, default=10, help="peak user count (default 10)")
    parser.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (users/5)"
    )
    parser.add_argument(
        "--duration", default="60s", help="run time, e.g. 30s, 5m, 1h30m (default 60s)"
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where reports go (default loadtest/results/locust-<date>-<time>)",
    )
    parser.add_argument(
        "--jwt-secret",
        default=None,
        help="the gateway's token secret (default $AGENTMEM_JWT_SECRET, else ./data/jwt-secret)",
    )
    return parser.parse_known_args(argv)


def locust_command(args: argparse.Namespace, report_dir: Path, extra: list[str]) -> list[str]:
    spawn_rate = args.spawn_rate if args.spawn_rate else max(1.0, args.users / 5)
    return [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host", args.host,
        "--users", str(args.users),
        "--spawn-rate", f"{spawn_rate:g}",
        "--run-time", args.duration,
        "--csv", str(report_dir / CSV_PREFIX),
        "--html", str(report_dir / "report.html"),
        *extra,
    ]  # fmt: skip


def summary(report_dir: Path) -> str | None:
    """The WebSocket, delivery and HTTP rows of the stats report as a small table, if any."""
    path = report_dir / f"{CSV_PREFIX}_stats.csv"
    if not path.exists() or path.stat().st_size == 0:
        return None
    lines = [f"{'type':<9} {'name':<36} {'requests':>9} {'failures':>9} {'p50':>7} {'p99':>7}"]
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["Type"] not in ("WS", "DELIVERY", "POST"):
                continue
            lines.append(
                f"{row['Type']:<9} {row['Name']:<36} {row['Request Count']:>9} "
                f"{row['Failure Count']:>9} {row['50%']:>7} {row['99%']:>7}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(argv)
    report_dir: Path = args.report_dir or (
        REPO / "loadtest" / "results" / f"locust-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(args, report_dir, extra)
    env = dict(os.environ)
    env[SHAPE_VARIABLE] = args.shape
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if args.jwt_secret:
        env["AGENTMEM_JWT_SECRET"] = args.jwt_secret  # not on the command line (ps)
    (report_dir / "command.txt").write_text(
        f"{SHAPE_VARIABLE}={args.shape} " + " ".join(command) + "\n", encoding="utf-8"
    )
    print(f"locust: {args.shape} shape, {args.users} users, {args.duration} -> {report_dir}")
    status = subprocess.call(command, cwd=REPO, env=env)
    table = summary(report_dir)
    if table is None:
        print(f"locust wrote no statistics (exit status {status})", file=sys.stderr)
        return status or 2
    print(table)
    print(f"reports: {report_dir}/report.html, {report_dir}/{CSV_PREFIX}_stats.csv")
    return status


if __name__ == "__main__":
    sys.exit(main())
