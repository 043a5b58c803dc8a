"""CosyVoice2 HiFT vocoder presets and GAN training config, used as ``--config=configs/cosyvoice2.py:hift[_SIZE]``.

``hift_config(size)`` is the whole config of the ``hift`` family: ``model`` holds ``HiFTConfig`` fields
(``sovits2_jax.models.hift``; ``PRESETS`` is the one table of its sizes), ``mel`` the GAN mel-loss transform (Matcha
mel with fmax None), ``f0`` the F0 targets' hop; ``discriminator``, ``loss`` and the training follow cosyvoice2.yaml's
``hifigan`` / ``train_conf_gan`` (Adam 2e-4 for G and D, clip 5, 24480-sample segments).
"""

import ml_collections

from sovits2_jax.configs.common import RECIPE_DEVICES, base_config, lookup, optimizer_config, training_sections
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
    """The ``hift`` family's config: Adam 2e-4 and clip 5 for the generator (``train.optimizer``) and the
    discriminator (``train.optimizer_d``); data task ``hift`` with batches of random crops."""
    tiny = size == "tiny"
    batch_size = {"tiny": 2, "small": 8}.get(size, 16)
    segment_samples = 9600 if tiny else 24480  # processor.truncate: a multiple of 480
    config = base_config(
        "hift",
        "out/cosyvoice2_hift",
        ml_collections.ConfigDict(named_config(size).to_dict()),
        # mel_spec_transform1 of cosyvoice2.yaml (matcha mel_spectrogram, fmax None, center False)
        mel=dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=None),
        # F0 targets: pyworld harvest + stonemask at one mel hop (20 ms)
        f0=dict(hop_size=480),
        discriminator=dict(
            mpd_periods=(2, 3, 5, 7, 11),
            mpd_channels=(8, 16, 32, 64, 64) if tiny else (32, 128, 512, 1024, 1024),
            mrd_fft_sizes=(1024, 2048, 512),
            mrd_hop_sizes=(120, 240, 50),
            mrd_win_lengths=(600, 1200, 240),
        ),
        loss=dict(mel=45.0, feat_match=2.0, tpr=1.0, tpr_tau=0.04, f0=1.0),
    )
    opt = dict(name="adam", lr=2e-4, grad_clip=5.0)
    sections = training_sections("hift", "hift", optimizer=opt)
    sections["train"].optimizer_d = optimizer_config(**opt)
    data = sections["data"]
    frames = segment_samples // data.mel.hop_size
    data.truncate_length = segment_samples
    data.bucket_lengths = (frames,)
    data.max_frames_in_batch = batch_size * frames
    # rows split over the recipe's 8-device host when the batch allows it (release: 16 crops)
    data.batch_multiple = RECIPE_DEVICES if batch_size % RECIPE_DEVICES == 0 else 1
    config.update(sections)
    return config
