"""Prints a config after command-line overrides and validation (exit 1 with the offending key otherwise).

python -m sovits2_jax.show_config --config=configs/qwen2.py:tiny --config.model.num_layers=3
"""

import sys

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:arg]", lock_config=True)


def main(argv) -> int:
    del argv
    from sovits2_jax.config import ConfigError, validate

    config = _CONFIG.value
    try:
        validate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
