"""The one command-line style of the package's ``python -m sovits2_jax...`` entry points: absl flags, and for
config-driven ones an ``ml_collections`` config flag (locked: unknown keys are rejected).

    _CONFIG = cli.config_flag("configs/qwen2.py:tiny")

    def main(argv) -> int:
        config = cli.validated(_CONFIG, validate)  # e.g. sovits2_jax.train.validate.validate
        ...

    if __name__ == "__main__":
        cli.run(main)

absl's own INFO lines (Orbax, JAX) are shown only with ``--verbosity=0`` (or ``-v 0``): the default is WARNING.
A ``validation.UserError`` raised by ``main`` (``ConfigError``, ``cli.Error``, a rendezvous timeout) and an
override of a key the config does not have are printed as one ``error: ...`` line on stderr and the command exits 1;
absl itself rejects unknown flags.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from sovits2_jax.validation import UserError, load_config

ERROR_EXIT = 1
_CONFIG_FLAGS: list[str] = []  # names of the config flags defined (for the unknown-key hint)


class Error(UserError):
    """A bad input the user can fix; printed as one line and the command exits ERROR_EXIT."""


def config_flag(default: str | None = None, name: str = "config", help: str = "ml_collections config file[:arg]"):
    """Defines the locked ``--config`` flag (with ``--config.a.b=v`` overrides), listed in the calling command's
    ``--help``; returns its holder."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    module = sys.argv[0] if caller == "__main__" else caller  # absl files a __main__ module's flags under argv[0]
    holder = config_flags.DEFINE_config_file(name, default, help, lock_config=True)
    _CONFIG_FLAGS.append(name)
    flags.FLAGS.register_flag_by_module(module, flags.FLAGS[name])
    return holder


def validated(holder: flags.FlagHolder, validate: Callable[[object], None]):
    """The config of ``holder`` after ``validate(config)`` (the caller's validator: the CLI style imports none)."""
    try:
        config = holder.value
        getattr(config, "lock", None)  # an unreadable file leaves a placeholder that raises on first use
    except OSError as e:
        reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise Error(f"--{holder.name}: cannot read the config file ({reason})") from None
    if config is None:
        raise Error(f"give --{holder.name}=FILE[:ARG]")
    validate(config)
    return config


def overrides(holder: flags.FlagHolder) -> dict:
    """The ``--<flag>.a.b=value`` overrides given on the command line, by dotted key (``a.b``)."""
    return dict(config_flags.get_override_values(flags.FLAGS[holder.name]))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return ERROR_EXIT


def _flag_error(error: flags.Error) -> str:
    """absl's flag error as one line; for a config file that failed to build, the exception it raised."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "Error whilst parsing config file" in lines[0]:
        return f"{lines[0].split(': Error whilst')[0].removeprefix('flag ')}: {lines[-1]}"
    return "; ".join(lines)


def _config_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if hasattr(value, "items"):
            keys.extend(_config_keys(value, f"{prefix}{key}."))
    return keys


def _unknown_key(argv: list[str]) -> str:
    """The first ``--<flag>.<path>`` override whose path the flag's config lacks, with the nearest keys it has."""
    for name in _CONFIG_FLAGS:
        spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), flags.FLAGS[name].default)
        try:
            keys = _config_keys(load_config(spec))
        except Exception:  # the plain message below is still right
            continue
        for arg in argv:
            path = arg.split("=", 1)[0].removeprefix(f"--{name}.")
            if not arg.startswith(f"--{name}.") or path in keys:
                continue
            leaf = path.rsplit(".", 1)[-1]
            others = [k for k in keys if not path.startswith(k + ".")]  # not the sections above it
            near = [k for k in others if k.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(path, others, n=2)
            hint = f"; did you mean {' or '.join(f'--{name}.{k}' for k in near[:3])}?" if near else ""
            return f"unknown config key --{name}.{path}{hint}"
    return "unknown config key in the overrides"


def _parse_flags(argv: list[str]) -> list[str]:
    renamed = [a for a in argv if a.split("=", 1)[0].endswith(".init.from")]
    if renamed:
        sys.exit(_fail(f"{renamed[0].split('=', 1)[0]} is now {renamed[0].split('=', 1)[0][:-4]}path"))
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(_fail(f"{_flag_error(e)} (see --help)"))
    except (AttributeError, KeyError):  # a locked config rejecting an unknown --config.a.b key
        sys.exit(_fail(_unknown_key(argv)))
    _quiet_libraries()
    return rest


def _quiet_libraries() -> None:
    """absl's INFO (Orbax's line per file written, JAX's backend probing) only when asked for with ``-v`` /
    ``--verbosity``; the package's own progress lines stay at INFO."""
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("sovits2_jax", "__main__"):  # a module run with -m logs as __main__
        logging.getLogger(name).setLevel(logging.INFO)


def run(main: Callable[[list[str]], int | None]) -> None:
    """``absl.app.run(main)`` where a UserError becomes one ``error: ...`` line and exit 1."""

    def guarded(argv: list[str]) -> int:
        try:
            return main(argv) or 0
        except UserError as e:
            return _fail(str(e))

    app.run(guarded, flags_parser=_parse_flags)


def command(argv: list[str], choices: tuple[str, ...] = ()) -> str:
    """The one positional argument of a CLI, from ``choices`` (none allowed when ``choices`` is empty)."""
    args = argv[1:]
    if not choices:
        if args:
            raise app.UsageError(f"unexpected arguments {args}")
        return ""
    if len(args) != 1 or args[0] not in choices:
        raise app.UsageError(f"give one of {', '.join(choices)} as the first argument (got {args})")
    return args[0]


def run_logged(main: Callable[[list[str]], int | None]) -> None:
    """``run(main)`` with the package's INFO lines on stderr as plain lines, once each (the data preparation
    stages report their progress and summary this way)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("sovits2_jax", "__main__"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False  # not through absl's handler as well
    run(main)
