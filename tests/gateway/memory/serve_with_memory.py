"""``agentmem-gateway serve`` with the memory API installed when the app does not wire it yet.

Run as ``python serve_with_memory.py serve --port N``. ``gateway.memory.wiring.install``
does nothing when ``create_app`` already serves the memory API, so this stays correct
once the gateway wires it itself.
"""

from __future__ import annotations

import sys
from typing import Any

import gateway.app
from gateway.cli.main import main
from gateway.memory.wiring import install

_create_app = gateway.app.create_app


def create_app(settings: Any) -> Any:
    app = _create_app(settings)
    install(app)
    return app


gateway.app.create_app = create_app

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
