"""CLI: see `python convert/parity.py --help`. Logic lives in sovits2_jax.parity.cli."""

import sys

from sovits2_jax.parity.cli import main

if __name__ == "__main__":
    sys.exit(main())
