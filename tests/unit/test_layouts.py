"""The numpy sequence layouts import without jax/flax, so the data pipeline can build sequences without them."""

import subprocess
import sys


def test_layouts_import_leaves_jax_and_flax_out():
    code = (
        "import sys\n"
        "import sovits2_jax.text.layouts as layouts\n"
        "layouts.gpt_sovits2_sequence([[1]], [[2]], speech_token_size=5)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'jaxlib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
