"""``python -m udpkit`` runs the command line."""

import sys

from udpkit.cli import main

sys.exit(main())
