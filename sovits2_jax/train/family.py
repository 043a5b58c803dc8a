"""What a model family plugs into the one trainer: its players (parameter sets with optimizers) and losses.

A family is a module ``sovits2_jax.train.<name>`` defining ``FAMILY`` (a ``Family``). The trainer never branches
on the family: it builds every player's module sharded on the mesh, and each train step runs the family's phases
in order; a phase differentiates its loss with respect to one player's parameters while every other player is held
fixed (a GAN: the discriminator phase, then the generator phase; DPO: a frozen reference player with no phase).

Losses are pure: ``loss(models, batch, rng, train) -> (loss, aux)`` with ``models`` the players' merged NNX
modules, ``batch`` the data task's global arrays and ``aux`` a dict of scalars. ``aux["weight"]`` (default 1) is
the count the loss is a mean over (tokens, frames, utterances): gradient accumulation and eval combine
microbatches weighted by it, so k microbatches of B/k give the gradient of one batch of B.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Protocol

import jax

LossFn = Callable[[dict, dict, jax.Array, bool], tuple[jax.Array, dict[str, jax.Array]]]


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


class Family(Protocol):
    """The interface the trainer uses; see the module docstring."""

    name: str

    def data_kind(self, config) -> str:
        """The data task (``config.data.kind``) this family trains on."""

    def players(self, config) -> list[Player]: ...

    def phases(self, config) -> list[Phase]: ...

    def eval_loss(self, config) -> LossFn:
        """The loss reported on the dev list (``train=False``); drives best-N checkpoints."""

    def init_from(self, config, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """Players' params with pretrained weights from ``path`` (any converter ``--src`` or our Orbax dir)."""

    def export_meta(self, config) -> dict:
        """meta.json of a checkpoint (format, model config) so it is a valid ``convert/jax_to_torch.py --src``."""


def get(name: str) -> Family:
    """The family module ``sovits2_jax.train.<name>``'s FAMILY."""
    try:
        module = importlib.import_module(f"sovits2_jax.train.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"sovits2_jax.train.{name}":
            raise ValueError(f"unknown training family {name!r}") from None
        raise
    family = getattr(module, "FAMILY", None)
    if family is None:
        raise ValueError(f"sovits2_jax.train.{name} defines no FAMILY")
    return family


def compute_dtype(config) -> str:
    """The compute dtype families build their modules with (``config.train.dtype``; params stay float32)."""
    return str(config.train.get("dtype", "float32"))


def remat(config, default: str = "none") -> str:
    """The remat policy name (``config.train.remat``, "" = the model config's ``default``)."""
    return str(config.train.get("remat", "") or default)
