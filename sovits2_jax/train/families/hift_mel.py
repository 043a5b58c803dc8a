"""The ``hift_mel`` family: HiFT's generator alone on reconstruction terms, without a discriminator.

A vocoder warm-up for CPU-scale runs: each step is one generator forward and backward (the GAN step of the
``hift`` family runs the generator twice and both discriminators), and the reconstruction terms carry most of what
a vocoder learns early. The loss is the ``hift`` family's mel L1 (weight ``config.loss.mel``) summed over the
config's mel (``config.mel``) and the coarser and finer resolutions of ``EXTRA_MELS`` (so timing and harmonics are
both constrained without a discriminator), plus its F0 L1 (``config.loss.f0``). Same config as ``hift``
(``--config=configs/cosyvoice2.py:hift_small --config.family=hift_mel``; the discriminator sections are unused);
the generator's checkpoints export and average as the hift family's, and a ``hift`` GAN run continues from one
with ``--config.init.path=WORKDIR/average`` (``python -m sovits2_jax.train.average`` writes it).
"""

from __future__ import annotations

import functools

from sovits2_jax.audio.mel import MelConfig, mel_spectrogram
from sovits2_jax.train.families.hift import HiftFamily, _weighted, _weights, gan_mel_fns
from sovits2_jax.train.family import Phase, Player
from sovits2_jax.train.gan_losses import f0_l1_loss, mel_l1_loss

# (n_fft, hop, mels) beside the config's 1920 / 480 / 80 mel: 21 ms and 43 ms windows at 24 kHz
EXTRA_MELS = ((512, 128, 64), (1024, 256, 80))


def reconstruction_mel_fns(mel: dict | None = None) -> list:
    """The config's GAN mel transform and the ``EXTRA_MELS`` resolutions (same rate and fmax)."""
    fns = gan_mel_fns(mel)
    base = MelConfig(**(mel or {"fmax": None}))
    for n_fft, hop, mels in EXTRA_MELS:
        cfg = MelConfig(n_fft=n_fft, num_mels=mels, sampling_rate=base.sampling_rate, hop_size=hop, win_size=n_fft,
                        fmin=base.fmin, fmax=base.fmax)  # fmt: skip
        fns.append(functools.partial(mel_spectrogram, cfg=cfg))
    return fns


class HiftMelFamily(HiftFamily):
    name = "hift_mel"

    def players(self, config) -> list[Player]:
        return [Player("generator", functools.partial(self.make_generator, config), config.train.optimizer)]

    def reconstruction_loss(self, config):
        weights, mel_fns = _weights(config), reconstruction_mel_fns(config.mel.to_dict())

        def loss(models, batch, rng, train):
            fake, f0 = models["generator"](batch["speech_feat"], rng)
            terms = {"loss_mel": mel_l1_loss(batch["speech"], fake, mel_fns),
                     "loss_f0": f0_l1_loss(f0, batch["pitch_feat"])}  # fmt: skip
            terms["loss"] = weights.mel * terms["loss_mel"] + weights.f0 * terms["loss_f0"]
            return _weighted(terms, batch)

        return loss

    def phases(self, config) -> list[Phase]:
        return [Phase("generator", self.reconstruction_loss(config))]

    def eval_loss(self, config):
        return self.reconstruction_loss(config)


FAMILY = HiftMelFamily()
