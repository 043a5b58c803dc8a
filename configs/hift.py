"""CosyVoice2 HiFT vocoder + GAN training: ``--config=configs/hift.py[:SIZE]``, SIZE in small, tiny ("" = release).

``config.hift.model`` holds ``HiFTConfig`` fields (``sovits2_jax.models.hift``; ``PRESETS`` is the one table of its
sizes); ``config.hift.mel`` the GAN mel-loss transform (Matcha mel with fmax None); ``discriminator``, ``loss`` and
``train`` follow cosyvoice2.yaml's ``hifigan`` / ``train_conf_gan`` (Adam 2e-4 for G and D, clip 5, 24480-sample
segments). ``hift_config(size)`` is the section itself, for configs/cosyvoice2.py to include.
"""

import ml_collections

from configs.common import base_config, lookup
from sovits2_jax.models.hift import HiFTConfig

# HiFTGenerator sizes: CosyVoice2-0.5B's hift (the HiFTConfig defaults); small and tiny keep the 480x structure with
# fewer channels
PRESETS = {
    "tiny": lambda: HiFTConfig(base_channels=32, f0_cond_channels=32),
    "small": lambda: HiFTConfig(base_channels=128, f0_cond_channels=128),
    "release": HiFTConfig,
}


def named_config(size: str = "") -> HiFTConfig:
    """The preset as a HiFTConfig: tiny, small, release ("")."""
    return lookup(PRESETS, size, "hift size", {"": "release"})()


def hift_config(size: str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            model=named_config(size).to_dict(),
            # mel_spec_transform1 of cosyvoice2.yaml (matcha mel_spectrogram, fmax None, center False)
            mel=dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=None),
            # F0 targets: pyworld harvest + stonemask at one mel hop (20 ms)
            f0=dict(hop_size=480),
            discriminator=dict(
                mpd_periods=(2, 3, 5, 7, 11),
                mrd_fft_sizes=(1024, 2048, 512),
                mrd_hop_sizes=(120, 240, 50),
                mrd_win_lengths=(600, 1200, 240),
            ),
            loss=dict(mel=45.0, feat_match=2.0, tpr=1.0, tpr_tau=0.04, f0=1.0),
            train=dict(
                batch_size={"tiny": 2, "small": 8}.get(size, 16),
                segment_samples=24480,  # processor.truncate: a multiple of 480
                lr_g=2e-4,
                lr_d=2e-4,
                grad_clip=5.0,
                max_epoch=200,
            ),
        )
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    return base_config("cosyvoice2.hift", "out/cosyvoice2_hift", part="hift", hift=hift_config(arg or ""))
