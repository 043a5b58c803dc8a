"""`python convert/jax_to_torch.py --src=PATH --dst=PATH`: an Orbax checkpoint of ours back to PyTorch; the same as
`python -m sovits2_jax.convert --to=torch` (see its --help)."""

import sys

from absl import flags

from sovits2_jax.convert import __main__ as convert_main

if __name__ == "__main__":
    flags.adopt_module_key_flags(convert_main)  # listed in this script's --help
    sys.argv.append("--to=torch")
    convert_main.run()
