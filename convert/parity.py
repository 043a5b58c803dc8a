"""`python convert/parity.py ...`: the same as `python -m sovits2_jax.parity` (see its --help)."""

import sys

from sovits2_jax.parity.cli import main

if __name__ == "__main__":
    sys.exit(main())
