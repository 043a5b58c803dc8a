"""What a model family plugs into the one trainer: its players (parameter sets with optimizers) and losses.

A family is a module defining ``FAMILY`` (a ``Family`` instance): ``sovits2_jax/train/families/<name>.py`` for
``--config.family=<name>``, or any importable module for ``--config.family=pkg.module`` (a family kept outside the
package: nothing in it changes). The trainer never branches
on the family: it builds every player's module sharded on the mesh, and each train step runs the family's phases
in order; a phase differentiates its loss with respect to one player's parameters while every other player is held
fixed (a GAN: the discriminator phase, then the generator phase; DPO: a frozen reference player with no phase).

Losses are pure: ``loss(models, batch, rng, train) -> (loss, aux)`` with ``models`` the players' merged NNX
modules, ``batch`` the data task's global arrays and ``aux`` a dict of scalars. ``aux["weight"]`` (default 1) is
the count the loss is a mean over (tokens, frames, utterances): gradient accumulation and eval combine
microbatches weighted by it, so k microbatches of B/k give the gradient of one batch of B. A phase with
``takes_step`` gets the train step's (traced) step number as a keyword, ``loss(..., step=step)``, for terms on a
schedule (a KL warm-up); eval losses are called without it and score the full objective.

Buffers: state that is carried and checkpointed with a player but not trained by its optimizer (EMA codebooks,
running statistics). ``init_buffers`` gives them, ``{player: tree of arrays}``; a family that has any gets them as a
fifth argument of every loss, ``loss(models, batch, rng, train, buffers)``, and a loss may return what they became
as ``aux["buffers"]`` (``{player: tree}`` for some players, same structure, shapes and dtypes; the others keep
theirs). The step threads them through its phases in order and through the microbatches of an accumulated step,
keeps the old ones when it skips a step, and the checkpoints save, restore and average them (the ``buffers`` item
beside ``params``). A family without buffers keeps four-argument losses.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax

from sovits2_jax.validation import ConfigError

LossFn = Callable[..., tuple[jax.Array, dict[str, Any]]]  # (models, batch, rng, train[, buffers]) -> (loss, aux)
BUFFERS = "buffers"  # the aux key of a loss's updated buffers


@dataclasses.dataclass(frozen=True)
class Player:
    """One parameter set: how to build its module, and its optimizer section (None: frozen)."""

    name: str  # "model", "generator", "discriminator", "reference"
    make_model: Callable[[], Any]  # () -> nnx.Module with fresh (seeded) random init
    optimizer: Any = None  # a config.train.optimizer-style ConfigDict; None = not trained
    param_labels: Callable[[Any], Any] | None = None  # params State -> labels for optax.multi_transform groups


@dataclasses.dataclass(frozen=True)
class Phase:
    """One optimizer update of ``player`` on ``loss`` inside a train step."""

    player: str
    loss: LossFn
    takes_step: bool = False  # the train step passes its step number as ``loss(..., step=step)`` (schedules)


class Family:
    """The interface the trainer uses; see the module docstring. Subclasses define ``name``, ``players``,
    ``phases``, ``eval_loss`` and ``export_meta``; the other hooks have working defaults."""

    name: str = ""
    throughput_unit: str = "tokens"  # what ``tokens`` counts: logged as ``train/<unit>_per_s``
    init_part: str = ""  # the part ``init.path`` gives weights and architecture of (``convert.parts``); "": none

    def validate(self, config) -> None:
        """Checks the family's own sections (its model section first); ConfigError naming the key."""

    def adopt(self, config, overrides=()) -> list[str]:
        """Sets, in place and before validation, the config keys the family's inputs decide (e.g. a text
        vocabulary from the data's tokenizer); returns the ``"key: ours -> theirs"`` changes. A key in
        ``overrides`` (the command line's dotted keys) that contradicts them is a ConfigError naming it."""
        return []

    def players(self, config) -> list[Player]:
        raise NotImplementedError

    def phases(self, config) -> list[Phase]:
        raise NotImplementedError

    def eval_loss(self, config) -> LossFn:
        """The loss reported on the dev list (``train=False``); drives best-N checkpoints."""
        raise NotImplementedError

    def make_batches(self, config, split: str) -> Any | None:
        """A batch iterator of the family's own for ``split`` ("train" / "dev"), or None: the data task's Grain
        pipeline of ``config.data`` (what every family with data uses)."""
        return None

    def tokens(self, batch: dict) -> jax.Array | int:
        """Tokens (or frames: ``throughput_unit``) a batch trains on, for the logged throughput; 0 when not
        meaningful."""
        return 0

    def init_from(self, config, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """Players' params with pretrained weights from ``path`` (any checkpoint ``convert.parts`` reads)."""
        raise ConfigError(f"family {self.name!r} cannot start from pretrained weights (config.init.path={path!r})")

    def init_buffers(self, config, mesh) -> dict[str, Any]:
        """The players' non-gradient state at step 0, ``{player: tree of jax.Arrays}`` placed on ``mesh`` (see the
        module docstring); ``{}`` (the default): none. With ``config.init.path`` set, a new run's buffers come from
        there (``buffers_from``)."""
        return {}

    def buffers_from(self, config, path: str, buffers: dict[str, Any]) -> dict[str, Any]:
        """The buffers with pretrained values from ``path`` (``config.init.path``); default: unchanged."""
        return buffers

    def export_meta(self, config) -> dict:
        """meta.json of a checkpoint (format, model config) so it is a valid ``convert/jax_to_torch.py --src``."""
        raise NotImplementedError


FAMILIES_PACKAGE = "sovits2_jax.train.families"


def names() -> list[str]:
    """The families that ship in ``sovits2_jax/train/families/``."""
    import pkgutil

    from sovits2_jax.train import families

    return sorted(m.name for m in pkgutil.iter_modules(families.__path__) if not m.name.startswith("_"))


def get(name: str) -> Family:
    """The ``FAMILY`` of ``sovits2_jax.train.families.<name>``, or of the module ``name`` when it is dotted."""
    module_name = name if "." in name else f"{FAMILIES_PACKAGE}.{name}"
    if not name or name.startswith("_") or ("." not in name and name not in names()):
        raise ConfigError(f"unknown training family {name!r}; choose one of {', '.join(names())} or a module path")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if module_name == e.name or module_name.startswith(f"{e.name}."):
            raise ConfigError(f"config.family={name!r}: no module {module_name}") from None
        raise
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, Family):
        raise ConfigError(f"config.family={name!r}: {module_name} defines no FAMILY (a train.family.Family)")
    return family


def compute_dtype(config) -> str:
    """The compute dtype families build their modules with (``config.train.dtype``; params stay float32)."""
    return str(config.train.get("dtype", "float32"))


def remat(config, default: str = "none") -> str:
    """The remat policy name (``config.train.remat``, "" = the model config's ``default``)."""
    return str(config.train.get("remat", "") or default)
