"""Prints a config after command-line overrides, ``init.path``'s architecture and validation, the trainer's own
steps (exit 1 with the offending key otherwise).

python -m sovits2_jax.show_config --config=configs/qwen2.py:tiny --config.model.num_layers=3
"""

from sovits2_jax import cli
from sovits2_jax.train.validate import adopt_init, validate

_CONFIG = cli.config_flag()


def main(argv) -> int:
    del argv
    config = cli.validated(_CONFIG, lambda c: validate(adopt_init(c, cli.overrides(_CONFIG))))
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    cli.run(main)
