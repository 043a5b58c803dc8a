"""VITS decoder configs: ``--config=configs/vits2.py[:ARG]``, ARG in ``v2`` (default, released GPT-SoVITS s2 v2),
``v1``, ``sovits2`` (= release: GPT-SoVITS2's VITS2: S3 tokens, BPE text, RoPE, hidden 256 / 4 heads / filter 1024,
6-layer transformer couplings), ``small`` (the sovits2 layout at 24 kHz and about half width, for CPU-scale quality
runs), ``tiny`` (the sovits2 layout shrunk for tests, 8 kHz) or ``v2_tiny`` (v2's SSL layout at that size);
``grvq2`` / ``grvq4`` (GPT-SoVITS2's planned content: the sovits2 layout reading 768-d SSL features through a
trainable grouped residual VQ of 2 groups x 1 or 2 quantizers = 2 or 4 codebooks of 1024 codes) and their
``grvq2_tiny`` / ``grvq4_tiny`` (the tiny size on the tiny HuBERT's 32-d features, 64 codes).

``PRESETS`` is the one table of VitsConfig sizes. ``config.model`` holds ``VitsConfig`` fields
(``sovits2_jax.models.vits2.config``), ``config.discriminator`` the MPD; the trainer's sections (family
``vits``, data task ``vits``) follow GPT-SoVITS's s2.json (``training``). v1 / v2 train on a Parquet carrying
SSL features (``ssl_feature``) and GPT-SoVITS phoneme ids (``phone_ids``), referencing themselves; the grvq
presets read ``ssl_feature`` (``python -m sovits2_jax.data.prep.ssl_features`` writes it) with BPE text and
same-speaker references.
"""

import ml_collections

from sovits2_jax.configs.common import base_config, lookup, optimizer_config, training_sections
from sovits2_jax.models.vits2.config import VitsConfig


def gpt_sovits_v1() -> VitsConfig:
    """Released GPT-SoVITS s2 v1 (322 phoneme symbols, reference encoder over all 1025 bins)."""
    return VitsConfig(version="v1", n_symbols=322, ref_channels=1025)


def gpt_sovits_v2() -> VitsConfig:
    """Released GPT-SoVITS s2 v2 (732 symbols, reference encoder over the first 704 bins)."""
    return VitsConfig(version="v2", n_symbols=732, ref_channels=704)


def gpt_sovits2() -> VitsConfig:
    """GPT-SoVITS2's VITS2 decoder: S3 tokens, BPE text, RoPE, hidden 256 / 4 heads / filter 1024 / 6 layers,
    transformer coupling flow (mean-only, 4 flows, all 6 layers applied)."""
    return VitsConfig(
        version="sovits2",
        inter_channels=192,
        hidden_channels=256,
        filter_channels=1024,
        n_heads=4,
        n_layers=6,
        position="rope",
        content="tokens",
        speech_vocab_size=4096 + 3,
        text_input="ids",
        n_symbols=151936,
        flow="transformer",
        flow_layers=6,
        ref_channels=704,
    )


def small() -> VitsConfig:
    """GPT-SoVITS2 layout at 24 kHz (hop 480 = 50 frames/s, as the data pipeline's audio), about half width."""
    return gpt_sovits2().replace(
        sampling_rate=24000,
        n_fft=1920,
        hop_length=480,
        win_length=1920,
        n_mel_channels=100,
        inter_channels=96,
        hidden_channels=128,
        filter_channels=512,
        n_heads=2,
        n_layers=4,
        mrte_hidden=256,
        mrte_heads=4,
        gin_channels=256,
        style_hidden=128,
        posterior_layers=8,
        flow_layers=4,
        upsample_rates=(8, 5, 3, 2, 2),
        upsample_kernel_sizes=(16, 11, 7, 4, 4),
        upsample_initial_channel=256,
        segment_size=15360,
    )


def tiny() -> VitsConfig:
    """GPT-SoVITS2 layout at toy size (8 kHz, hop 160 = 50 frames/s, 25 Hz tokens)."""
    return gpt_sovits2().replace(
        sampling_rate=8000,
        n_fft=256,
        hop_length=160,
        win_length=256,
        n_mel_channels=40,
        inter_channels=32,
        hidden_channels=64,
        filter_channels=128,
        n_heads=2,
        n_layers=2,
        speech_vocab_size=64 + 3,
        n_symbols=64,
        mrte_hidden=64,
        mrte_heads=2,
        gin_channels=64,
        ref_channels=129,
        style_hidden=32,
        posterior_layers=4,
        flow_layers=2,
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3, 5),),
        upsample_rates=(8, 5, 4),
        upsample_kernel_sizes=(16, 11, 8),
        upsample_initial_channel=64,
        segment_size=2560,
        p_dropout=0.0,
    )


def v2_tiny() -> VitsConfig:
    """GPT-SoVITS v2's layout (SSL features through the frozen codebook, WaveNet flow, relative attention) at the
    tiny size, for tests on a Parquet with an SSL column (8-d features, 64 phoneme ids)."""
    return tiny().replace(
        version="v2", content="hubert_vq", ssl_dim=8, codebook_size=16, flow="wavenet", position="relative",
        flow_layers=2, n_symbols=64,
    )  # fmt: skip


def sovits2_grvq(quantizers: int) -> VitsConfig:
    """GPT-SoVITS2's VITS2 on SSL features (chinese-hubert-base / mHuBERT-147, 768-d at 50 Hz) through a grouped
    residual VQ: 2 groups of 384 dims x ``quantizers`` residual stages, 1024 codes each, GPT-SoVITS's VQ settings."""
    return gpt_sovits2().replace(content="ssl_grvq", ssl_dim=768, codebook_size=1024, vq_groups=2,
                                 vq_quantizers=quantizers)  # fmt: skip


def grvq_tiny(quantizers: int) -> VitsConfig:
    """The tiny size reading the tiny HuBERT's 32-d features (``models.hubert.tiny``) through 2 groups x
    ``quantizers`` codebooks of 64 codes (10 k-means iterations)."""
    return tiny().replace(content="ssl_grvq", ssl_dim=32, codebook_size=64, vq_groups=2, vq_quantizers=quantizers,
                          vq_kmeans_iters=10, n_symbols=151936)  # fmt: skip


PRESETS = {"v2": gpt_sovits_v2, "v1": gpt_sovits_v1, "sovits2": gpt_sovits2, "small": small, "tiny": tiny,
           "v2_tiny": v2_tiny, "grvq2": lambda: sovits2_grvq(1), "grvq4": lambda: sovits2_grvq(2),
           "grvq2_tiny": lambda: grvq_tiny(1), "grvq4_tiny": lambda: grvq_tiny(2)}  # fmt: skip
ALIASES = {"": "v2", "release": "sovits2"}


def model_config(arg: str = "") -> VitsConfig:
    """The preset as a VitsConfig."""
    return lookup(PRESETS, arg, "vits2 config", ALIASES)()


def discriminator_section(size: str = "") -> dict:
    """GPT-SoVITS's MultiPeriodDiscriminator (scale discriminator + periods 2..11); tiny: two small periods."""
    if size.endswith("tiny"):
        return dict(periods=(2, 3), scale_layers="none", channels=(8, 16, 32, 64, 64))
    return dict(periods=(2, 3, 5, 7, 11), scale_layers="vits", channels=(32, 128, 512, 1024, 1024))


def training(model: VitsConfig, *, batch_size: int, crop_frames: int, reference: str, ref_frames: int = 300) -> dict:
    """The trainer's sections for the ``vits`` family (configs.common.training_sections) on this model.

    GPT-SoVITS's s2.json: AdamW lr 1e-4, betas (0.8, 0.99), eps 1e-9, torch's decay 0.01, text at 0.4x lr, for
    G and D (its per-epoch lr decay of 0.999875 is left out: constant lr). Data: the model's audio frontend,
    ``crop_frames`` crops, ``batch_size`` of them per batch; v1/v2 read SSL features and GPT-SoVITS phoneme ids."""
    opt = dict(name="adamw", lr=1e-4, b1=0.8, b2=0.99, eps=1e-9, weight_decay=0.01)
    sections = training_sections("vits", "vits", optimizer=dict(opt, lr_scale={"text": 0.4}))
    sections["train"].optimizer_d = optimizer_config(**opt)
    data = sections["data"]
    data.sample_rate = model.sampling_rate
    data.spectrogram = dict(n_fft=model.n_fft, hop_size=model.hop_length, win_size=model.win_length)
    data.unit_frames = model.content_upsample
    data.bucket_lengths = [crop_frames]
    data.max_frames_in_batch = batch_size * crop_frames
    data.reference = reference
    data.ref_frames = ref_frames
    data.text_vocab_size = model.n_symbols
    if model.content == "tokens":
        data.speech_token_size = model.speech_vocab_size - 3
        data.ssl_column = ""
    else:
        data.ssl_column = "ssl_feature"
        data.ssl_dim = model.ssl_dim
        if model.content == "hubert_vq":  # GPT-SoVITS's phonemes; ssl_grvq reads BPE text as the tokens layout
            data.text_ids_column = "phone_ids"
    return sections


def vits_training_config(model: VitsConfig, workdir: str, *, discriminator: dict, batch_size: int,
                         crop_frames: int, reference: str, ref_frames: int) -> ml_collections.ConfigDict:
    """The ``vits`` family's whole config for ``model`` (see ``training``)."""
    config = base_config("vits", workdir, ml_collections.ConfigDict(model.to_dict()), discriminator=discriminator)
    config.update(training(model, batch_size=batch_size, crop_frames=crop_frames, reference=reference,
                           ref_frames=ref_frames))  # fmt: skip
    return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    name = arg or "v2"
    model = model_config(name)
    tiny_size = name.endswith("tiny")
    return vits_training_config(
        model,
        f"out/vits2_{name}",
        discriminator=discriminator_section(name),
        batch_size=4 if tiny_size else {"small": 8}.get(name, 32),
        crop_frames=40 if tiny_size else max(200, 2 * model.segment_size // model.hop_length),
        reference="self" if model.content == "hubert_vq" else "speaker",
        ref_frames=100 if tiny_size else 300,
    )


def vits_config(config: ml_collections.ConfigDict) -> VitsConfig:
    """The model section back as a validated VitsConfig (errors name the offending key)."""
    return VitsConfig.from_section(config.model, "config.model")
