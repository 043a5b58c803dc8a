"""``python -m sovits2_jax.parity [--src PATH] [--component NAME] ...`` (console script ``sovits2-parity``; also
``convert/parity.py``): our converted model against the PyTorch reference. See ``sovits2_jax.parity.cli``."""

import sys

from sovits2_jax.parity.cli import main

if __name__ == "__main__":
    sys.exit(main())
