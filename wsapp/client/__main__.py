"""``python -m wsapp.client URL``: the command-line client."""

import sys

from ..cli import main

__all__: list[str] = []

sys.exit(main())
