"""The one command-line style of the package's ``python -m sovits2_jax...`` entry points: absl flags, and for
config-driven ones an ``ml_collections`` config flag (locked: unknown keys are rejected).

    _CONFIG = cli.config_flag("configs/qwen2.py:tiny")

    def main(argv) -> int:
        config = cli.validated(_CONFIG, validate)  # e.g. sovits2_jax.train.validate.validate
        ...

    if __name__ == "__main__":
        cli.run(main)

A ``validation.UserError`` raised by ``main`` (``ConfigError``, ``cli.Error``, a rendezvous timeout) and an
override of a key the config does not have are printed as one ``error: ...`` line on stderr and the command exits 1;
absl itself rejects unknown flags.
"""

from __future__ import annotations

import keyword
import logging
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from sovits2_jax.validation import UserError

ERROR_EXIT = 1


class Error(UserError):
    """A bad input the user can fix; printed as one line and the command exits ERROR_EXIT."""


def config_flag(default: str | None = None, name: str = "config", help: str = "ml_collections config file[:arg]"):
    """Defines the locked ``--config`` flag (with ``--config.a.b=v`` overrides); returns its holder."""
    return config_flags.DEFINE_config_file(name, default, help, lock_config=True)


def validated(holder: flags.FlagHolder, validate: Callable[[object], None]):
    """The config of ``holder`` after ``validate(config)`` (the caller's validator: the CLI style imports none)."""
    config = holder.value
    if config is None:
        raise Error(f"give --{holder.name}=FILE[:ARG]")
    validate(config)
    return config


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return ERROR_EXIT


def _keyword_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, list[str], str]]]:
    """Splits off ``--config.a.from=v`` style overrides whose path has a Python keyword (ml_collections parses
    the path as an expression and fails on ``from``): (other args, [(flag name, key path, value)])."""
    rest, held = [], []
    for arg in argv:
        name, eq, value = arg.partition("=")
        parts = name.lstrip("-").split(".")
        if arg.startswith("--") and eq and len(parts) > 1 and any(keyword.iskeyword(p) for p in parts[1:]):
            held.append((parts[0], parts[1:], value))
        else:
            rest.append(arg)
    return rest, held


def _apply(held) -> None:
    for flag, path, value in held:
        node = flags.FLAGS[flag].value
        for key in path[:-1]:
            node = node[key]
        if path[-1] not in node:
            sys.exit(_fail(f"unknown config key in the overrides: {flag}.{'.'.join(path)}"))
        current = node[path[-1]]
        node[path[-1]] = type(current)(value) if isinstance(current, (int, float, str)) else value


def _parse_flags(argv: list[str]) -> list[str]:
    argv, held = _keyword_overrides(argv)
    sys.argv[:] = argv  # config_flags reads its overrides from sys.argv itself
    try:
        rest = app.parse_flags_with_usage(argv)
        _apply(held)
        return rest
    except (AttributeError, KeyError) as e:  # a locked config rejecting an unknown --config.a.b key
        detail = e
        while isinstance(detail, BaseException) and detail.args:  # ml_collections nests KeyError in AttributeError
            detail = detail.args[0]
        sys.exit(_fail(f"unknown config key in the overrides: {str(detail).replace(chr(10), '; ')}"))


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
    """``run(main)`` logging INFO to stderr (the data preparation stages report their progress)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    run(main)
