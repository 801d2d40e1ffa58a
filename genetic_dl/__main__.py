"""``python -m genetic_dl``: the command line."""
import sys

from .cli import main

sys.exit(main())
