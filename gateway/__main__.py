"""``python -m gateway`` runs the command-line interface."""

from gateway.cli.main import main

raise SystemExit(main())
