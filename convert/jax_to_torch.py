"""CLI: see `python convert/jax_to_torch.py --help`. Logic lives in sovits2_jax.convert.cli."""

import sys

from sovits2_jax.convert.cli import jax_to_torch_main

if __name__ == "__main__":
    sys.exit(jax_to_torch_main())
