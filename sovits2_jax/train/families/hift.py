"""The ``hift`` family: CosyVoice2's HiFT vocoder GAN (a discriminator phase, then a generator phase per batch).

Players ``generator`` (``HiFTGenerator``) and ``discriminator`` (MPD + multi-resolution spectrogram), each with
its own optax optimizer (``config.train.optimizer`` / ``config.train.optimizer_d``: Adam 2e-4, clip 5). Losses
are ``train/gan_losses.py``'s (mel L1 x45, feature matching x2, TPR, F0 L1, LSGAN). Each phase runs its own
generator forward with its own key, as the reference's two turns each call the generator (fresh source noise).
The data task is ``hift`` (24480-sample crops, their mel and F0). Batches are full (``drop_remainder``); a
lockstep filler batch without a valid row gets weight 0 and a zero loss.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.audio.mel import MelConfig, mel_spectrogram
from sovits2_jax.models import hift as hift_model
from sovits2_jax.models.discriminators import MultiPeriodDiscriminator, MultipleDiscriminator, MultiResSpecDiscriminator
from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.train.gan_losses import GanLossWeights, hift_discriminator_loss, hift_generator_loss


def gan_mel_fns(mel: dict | None = None) -> list[Callable]:
    """The GAN mel-loss transforms (CosyVoice2: one Matcha mel, fmax None)."""
    cfg = MelConfig(**(mel or {"fmax": None}))
    return [functools.partial(mel_spectrogram, cfg=cfg)]


def discriminator_terms(generator, discriminator, batch: dict, rng, weights: GanLossWeights) -> dict:
    """The discriminator objective on D(real, G(mel) without its gradient)."""
    fake, _ = generator(batch["speech_feat"], rng)
    return hift_discriminator_loss(discriminator(batch["speech"], jax.lax.stop_gradient(fake)), weights)


def generator_terms(generator, discriminator, batch: dict, rng, mel_fns: Sequence[Callable], weights) -> dict:
    """The generator objective (adversarial, feature matching, mel L1, TPR, F0 L1) with D held fixed."""
    fake, f0 = generator(batch["speech_feat"], rng)
    disc_out = discriminator(batch["speech"], fake)
    return hift_generator_loss(batch["speech"], fake, f0, batch["pitch_feat"], disc_out, mel_fns, weights)


def _weighted(terms: dict, batch: dict) -> tuple[jax.Array, dict]:
    """(loss, aux): weight = valid rows; a batch without one contributes nothing."""
    weight = jnp.sum(batch["valid"]).astype(jnp.float32)
    loss = jnp.where(weight > 0, terms["loss"], 0.0)
    return loss, {**{k: v for k, v in terms.items() if k != "loss"}, "weight": weight}


def _weights(config) -> GanLossWeights:
    return GanLossWeights(**config.loss.to_dict())


class HiftFamily(Family):
    name = "hift"
    init_part = "hift"
    throughput_unit = "frames"  # mel / spectrogram frames

    def validate(self, config) -> None:
        hift_model.validate(config.model)

    def model_config(self, config) -> HiFTConfig:
        return HiFTConfig.from_section(config.model, "config.model")

    def make_generator(self, config):
        return HiFTGenerator(self.model_config(config), rngs=nnx.Rngs(config.seed))

    def make_discriminator(self, config):
        d = config.discriminator
        rngs = nnx.Rngs(config.seed + 1)
        return MultipleDiscriminator(
            rngs=rngs,
            mpd=MultiPeriodDiscriminator(tuple(d.mpd_periods), channels=tuple(d.mpd_channels), rngs=rngs),
            mrd=MultiResSpecDiscriminator(
                tuple(d.mrd_fft_sizes), tuple(d.mrd_hop_sizes), tuple(d.mrd_win_lengths), rngs=rngs
            ),
        )

    def players(self, config) -> list[Player]:
        return [
            Player("generator", functools.partial(self.make_generator, config), config.train.optimizer),
            Player("discriminator", functools.partial(self.make_discriminator, config), config.train.optimizer_d),
        ]

    def discriminator_loss(self, config):
        weights = _weights(config)

        def loss(models, batch, rng, train):
            terms = discriminator_terms(models["generator"], models["discriminator"], batch, rng, weights)
            return _weighted(terms, batch)

        return loss

    def generator_loss(self, config):
        weights, mel_fns = _weights(config), gan_mel_fns(config.mel.to_dict())

        def loss(models, batch, rng, train):
            terms = generator_terms(models["generator"], models["discriminator"], batch, rng, mel_fns, weights)
            return _weighted(terms, batch)

        return loss

    def phases(self, config) -> list[Phase]:
        d_loss, g_loss = self.discriminator_loss(config), self.generator_loss(config)
        return [Phase("discriminator", d_loss), Phase("generator", g_loss)]

    def eval_loss(self, config):
        return self.generator_loss(config)

    def init_from(self, config, path, params):
        from sovits2_jax.convert import parts

        loaded, _ = parts.load(path, "hift")
        return {**params, "generator": loaded}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("hift", self.model_config(config), player="generator")

    def tokens(self, batch):
        return jnp.sum(batch["speech_feat_len"])


FAMILY = HiftFamily()
