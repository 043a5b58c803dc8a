"""``python -m sovits2_jax.convert --src=PATH --dst=PATH [--to=auto|jax|torch]`` (console script
``sovits2-convert``).

A PyTorch checkpoint (a HF Qwen2 directory, a CosyVoice2 model directory, a GPT-SoVITS ``.pth``) becomes an Orbax
checkpoint of ours; an Orbax checkpoint of ours (converted, averaged, a trainer step or workdir) is written back in
the PyTorch format it came from. ``--to=auto`` picks the direction from ``--src``. A bad input prints one
``error:`` line and exits 1.
"""

from __future__ import annotations

from absl import flags

from sovits2_jax import cli
from sovits2_jax.convert.cli import DIRECTIONS, convert

_SRC = flags.DEFINE_string("src", None, "checkpoint to convert: PyTorch file or directory, or an Orbax checkpoint")
_DST = flags.DEFINE_string("dst", None, "where to write the converted checkpoint")
_TO = flags.DEFINE_enum("to", "auto", DIRECTIONS, "jax: PyTorch -> Orbax; torch: Orbax -> PyTorch; auto: by --src")


def main(argv) -> int:
    from sovits2_jax.convert.mapping import ConversionError

    cli.command(argv)
    if not _SRC.value or not _DST.value:
        raise cli.Error("give --src and --dst")
    try:
        print(convert(_SRC.value, _DST.value, _TO.value))
    except (ConversionError, OSError) as e:
        raise cli.Error(str(e)) from None
    return 0


def run() -> None:
    """Entry point of the console script and the ``convert/*.py`` wrappers."""
    cli.run(main)


if __name__ == "__main__":
    run()
