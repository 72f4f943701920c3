"""How the bare ceiling servers run: uvicorn with the event loop and WebSocket protocol
the gateway uses.

``agentmem-gateway serve`` runs uvicorn on the loop of its ``event_loop`` setting (uvloop
when installed) with the WebSocket protocol of its ``ws_implementation`` setting (its own
``gateway`` protocol by default). A bare server takes the same, so that the gap to the
ceiling is the gateway's own work rather than a configuration choice: the protocol from
``AGENTMEM_BENCH_BARE_WS``, else ``AGENTMEM_WS_IMPLEMENTATION``, else the gateway's default;
the loop from ``AGENTMEM_BENCH_BARE_LOOP``, else ``AGENTMEM_EVENT_LOOP``, else the gateway's
default. ``AGENTMEM_BENCH_BARE_WS=websockets-sansio`` gives stock uvicorn's protocol (the
ceiling of a gateway that had not tuned its transport). Against a ``--target`` started with
other settings, set both to match.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any


def stack() -> dict[str, str]:
    from gateway.settings import Settings

    ws = os.environ.get("AGENTMEM_BENCH_BARE_WS") or os.environ.get(
        "AGENTMEM_WS_IMPLEMENTATION", Settings().ws_implementation
    )
    loop = os.environ.get("AGENTMEM_BENCH_BARE_LOOP") or os.environ.get(
        "AGENTMEM_EVENT_LOOP", Settings().event_loop
    )
    if loop == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            loop = "asyncio"
        else:
            loop = "uvloop"
    return {"loop": loop, "ws": ws}


def _ws_protocol(name: str) -> Any:
    """uvicorn's ``ws`` argument: the gateway's own protocols by name, uvicorn's as they are."""
    import gateway.server

    resolve = getattr(gateway.server, "ws_protocol", None)
    return resolve(name) if resolve is not None else name


def serve(app: Any, port: int) -> None:
    import uvicorn

    chosen = stack()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop=chosen["loop"],
        ws=_ws_protocol(chosen["ws"]),
        ws_ping_interval=None,
        ws_ping_timeout=None,
    )


def gateway_environ() -> dict[str, str]:
    """This process's environment without the benchmark's own ``AGENTMEM_BENCH_*`` knobs,
    which a gateway would refuse as unknown settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_BENCH_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    for _ in range(400):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after 20 s")


def start(module: str) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m loadtest.bench.<module> PORT`` on a free port, once it listens."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"loadtest.bench.{module}", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    return proc, port


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
