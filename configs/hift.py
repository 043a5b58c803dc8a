"""CosyVoice2 HiFT vocoder + GAN training: ``--config=configs/hift.py[:SIZE]``, SIZE in small, tiny ("" = release).

``config.hift.model`` holds ``HiFTConfig`` fields (``sovits2_jax.models.hift``; ``PRESETS`` is the one table of its
sizes); ``config.hift.mel`` the GAN mel-loss transform (Matcha mel with fmax None); ``discriminator``, ``loss`` and
``train`` follow cosyvoice2.yaml's ``hifigan`` / ``train_conf_gan`` (Adam 2e-4 for G and D, clip 5, 24480-sample
segments). ``hift_config(size)`` is the section itself, for configs/cosyvoice2.py to include.
"""

import ml_collections

from configs.common import RECIPE_DEVICES, base_config, lookup, optimizer_config, training_sections
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
                mpd_channels=(8, 16, 32, 64, 64) if size == "tiny" else (32, 128, 512, 1024, 1024),
                mrd_fft_sizes=(1024, 2048, 512),
                mrd_hop_sizes=(120, 240, 50),
                mrd_win_lengths=(600, 1200, 240),
            ),
            loss=dict(mel=45.0, feat_match=2.0, tpr=1.0, tpr_tau=0.04, f0=1.0),
            train=dict(
                batch_size={"tiny": 2, "small": 8}.get(size, 16),
                segment_samples=9600 if size == "tiny" else 24480,  # processor.truncate: a multiple of 480
                lr_g=2e-4,
                lr_d=2e-4,
                grad_clip=5.0,
                max_epoch=200,
            ),
        )
    )


def training(size: str = "") -> dict:
    """The trainer's sections for the ``hift`` family (configs.common.training_sections): Adam 2e-4 and clip 5 for
    the generator (``optimizer``) and the discriminator (``optimizer_d``); data task ``hift`` with
    ``batch_size`` crops of ``segment_samples`` per batch."""
    train = hift_config(size).train
    opt = dict(name="adam", lr=train.lr_g, grad_clip=train.grad_clip)
    sections = training_sections("hift", "hift", optimizer=opt)
    sections["train"].optimizer_d = optimizer_config(**dict(opt, lr=train.lr_d))
    data = sections["data"]
    frames = train.segment_samples // data.mel.hop_size
    data.truncate_length = train.segment_samples
    data.bucket_lengths = [frames]
    data.max_frames_in_batch = train.batch_size * frames
    # rows split over the recipe's 8-device host when the batch allows it (release: 16 crops)
    data.batch_multiple = RECIPE_DEVICES if train.batch_size % RECIPE_DEVICES == 0 else 1
    return sections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = base_config("cosyvoice2.hift", "out/cosyvoice2_hift", part="hift", hift=hift_config(arg or ""))
    config.update(training(arg or ""))
    return config
