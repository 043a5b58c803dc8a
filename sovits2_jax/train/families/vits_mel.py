"""The ``vits_mel`` family: the VITS decoder's generator alone on its reconstruction terms, without a discriminator.

A CPU-scale warm-up, as ``hift_mel`` is for HiFT: each step is one generator forward and backward (the ``vits``
GAN step adds the discriminator's forward on real and generated segments, its backward, and a second generator
pass through it), and the mel L1, KL and duration terms carry most of what the decoder learns early. Same config
as ``vits`` (``--config=configs/gpt_sovits2.py:vits_small --config.family=vits_mel``; the discriminator sections are
unused); the generator's checkpoints average and export as the vits family's, and a ``vits`` GAN run continues
from one with ``--config.init.path=WORKDIR/average``.
"""

from __future__ import annotations

from sovits2_jax.train.families.vits import VitsFamily
from sovits2_jax.train.family import Phase, Player


class VitsMelFamily(VitsFamily):
    name = "vits_mel"

    def players(self, config) -> list[Player]:
        return [p for p in super().players(config) if p.name == "generator"]

    @staticmethod
    def reconstruction_loss(models, batch, rng, train, buffers=None, step=None):
        return VitsFamily.generator_loss({**models, "discriminator": None}, batch, rng, train, buffers, step)

    def phases(self, config) -> list[Phase]:
        return [Phase("generator", self.reconstruction_loss, takes_step=True)]

    def eval_loss(self, config):
        return self.reconstruction_loss


FAMILY = VitsMelFamily()
