"""``python -m fastalign``: the command line (see :mod:`fastalign.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
