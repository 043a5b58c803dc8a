"""Prints a config after command-line overrides and validation (exit 1 with the offending key otherwise).

python -m sovits2_jax.show_config --config=configs/qwen2.py:tiny --config.model.num_layers=3
"""

from sovits2_jax import cli
from sovits2_jax.train.validate import validate

_CONFIG = cli.config_flag()


def main(argv) -> int:
    del argv
    print(cli.validated(_CONFIG, validate).to_json_best_effort(indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    cli.run(main)
