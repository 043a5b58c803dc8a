"""CLI: see `python convert/torch_to_jax.py --help`. Logic lives in sovits2_jax.convert.cli."""

import sys

from sovits2_jax.convert.cli import torch_to_jax_main

if __name__ == "__main__":
    sys.exit(torch_to_jax_main())
