"""CLI: see `python convert/parity.py --help`. Logic lives in sovits2_jax.convert.cli."""

import sys

from sovits2_jax.convert.cli import parity_main

if __name__ == "__main__":
    sys.exit(parity_main())
