"""Finding the token secret of a running gateway, for the load tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def find_secret(given: str | None) -> tuple[str | None, Path]:
    """The secret given, else ``$AGENTMEM_JWT_SECRET``, else the one in the data directory
    (``$AGENTMEM_DATA_DIR`` or ``./data``, as ``make run`` writes it); None when there is
    none, with the file that was looked for (for the caller's error message)."""
    path = Path(os.environ.get("AGENTMEM_DATA_DIR", "data")) / "jwt-secret"
    if given:
        return given, path
    if os.environ.get("AGENTMEM_JWT_SECRET"):
        return os.environ["AGENTMEM_JWT_SECRET"], path
    try:
        return path.read_text(encoding="ascii").strip(), path
    except OSError:
        return None, path
