"""``python -m agents``: the memory pipeline on its own (see ``agents.cli``)."""

import sys

from agents.cli import main

sys.exit(main())
