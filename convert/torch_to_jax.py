"""`python convert/torch_to_jax.py --src=PATH --dst=PATH`: a PyTorch checkpoint to an Orbax checkpoint; the same as
`python -m sovits2_jax.convert --to=jax` (see its --help)."""

import sys

from absl import flags

from sovits2_jax.convert import __main__ as convert_main

if __name__ == "__main__":
    flags.adopt_module_key_flags(convert_main)  # listed in this script's --help
    sys.argv.append("--to=jax")
    convert_main.run()
