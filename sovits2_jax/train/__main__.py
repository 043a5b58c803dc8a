"""``python -m sovits2_jax.train --config=configs/<file>.py:<arg> --workdir=DIR [--config.key=value ...]``.

Trains the family ``config.family`` (see sovits2_jax/train/trainer.py); a rerun with the same ``--workdir``
resumes from its latest complete checkpoint. SIGTERM saves a checkpoint and exits 0.
"""

from __future__ import annotations

from absl import flags

from sovits2_jax import cli, paths
from sovits2_jax.train.validate import adopt_init, validate

_CONFIG = cli.config_flag(None)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints/, tensorboard/, metrics.jsonl)")


def main(argv) -> int:
    from sovits2_jax.parallel import distributed
    from sovits2_jax.train import trainer

    if _WORKDIR.value:
        paths.resolve(_WORKDIR.value, "--workdir")  # a bad scheme fails before any start-up work
    distributed.initialize()  # before anything asks JAX for its devices (config validation counts them)
    config = cli.validated(_CONFIG, lambda c: validate(adopt_init(c, cli.overrides(_CONFIG))))
    workdir = _WORKDIR.value or config.get("workdir")
    if not workdir:
        raise cli.Error("give --workdir=DIR")
    return trainer.train(config, paths.resolve(workdir, "config.workdir"))


if __name__ == "__main__":
    cli.run(main)
