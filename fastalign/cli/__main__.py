"""``python -m fastalign.cli``: the command line (same as ``python -m fastalign``)."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
