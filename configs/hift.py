"""CosyVoice2 HiFT vocoder + GAN training: ``--config=configs/hift.py[:tiny]``.

``config.hift.model`` holds ``HiFTConfig`` fields (``sovits2_jax.models.hift``); ``config.hift.mel`` the GAN
mel-loss transform (Matcha mel with fmax None); ``discriminator``, ``loss`` and ``train`` follow cosyvoice2.yaml's
``hifigan`` / ``train_conf_gan`` (Adam 2e-4 for G and D, clip 5, 24480-sample segments). ``hift_config(size)`` is
the section itself, for configs/cosyvoice2.py to include.
"""

import ml_collections

from sovits2_jax.parallel.rules import mesh_config, sharding_config


def model_config(size: str = "") -> ml_collections.ConfigDict:
    """HiFTGenerator hyper-parameters (CosyVoice2-0.5B's hift; ``tiny`` keeps the 480x structure, fewer channels)."""
    if size not in ("", "tiny"):
        raise ValueError(f"unknown hift size {size!r}; choose '' (CosyVoice2) or 'tiny'")
    tiny = size == "tiny"
    return ml_collections.ConfigDict(
        dict(
            in_channels=80,
            base_channels=32 if tiny else 512,
            nb_harmonics=8,
            sampling_rate=24000,
            nsf_alpha=0.1,
            nsf_sigma=0.003,
            nsf_voiced_threshold=10.0,
            upsample_rates=(8, 5, 3),
            upsample_kernel_sizes=(16, 11, 7),
            n_fft=16,
            hop_len=4,
            resblock_kernel_sizes=(3, 7, 11),
            resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
            source_resblock_kernel_sizes=(7, 7, 11),
            source_resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
            lrelu_slope=0.1,
            audio_limit=0.99,
            f0_cond_channels=32 if tiny else 512,
            f0_num_layers=5,
            dtype="float32",
        )
    )


def hift_config(size: str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            model=model_config(size),
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
                batch_size=2 if size == "tiny" else 16,
                segment_samples=24480,  # processor.truncate: a multiple of 480
                lr_g=2e-4,
                lr_d=2e-4,
                grad_clip=5.0,
                max_epoch=200,
            ),
        )
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model_type = "cosyvoice2.hift"
    config.part = "hift"
    config.hift = hift_config(arg or "")
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = "out/cosyvoice2_hift"
    return config
