"""``python -m sinagot``: the ``sinagot`` command where no console script is installed
(a generated systemd unit then starts the daemon this way)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
