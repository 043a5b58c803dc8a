"""Configuration of the VITS decoder: GPT-SoVITS s2 (v1 / v2) and GPT-SoVITS2's VITS2 (presets: configs/vits2.py)."""

from __future__ import annotations

import dataclasses

from sovits2_jax.models import grvq
from sovits2_jax.models.config_base import ConfigBase

CONTENT_KINDS = ("hubert_vq", "tokens", "ssl_grvq")
SSL_CONTENT = ("hubert_vq", "ssl_grvq")  # the kinds that read SSL features
TEXT_INPUTS = ("ids", "features")
FLOW_KINDS = ("wavenet", "transformer")
POSITIONS = ("relative", "rope")


@dataclasses.dataclass(frozen=True)
class VitsConfig(ConfigBase):
    """Every size of ``SynthesizerTrn``; defaults are the released GPT-SoVITS s2 v2 model (32 kHz, hop 640)."""

    config_name = "vits config"

    version: str = "v2"
    # audio frontend (linear spectrogram at 50 frames/s)
    sampling_rate: int = 32000
    n_fft: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    n_mel_channels: int = 128
    # text encoder / prior
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    position: str = "relative"
    window_size: int = 4
    rope_theta: float = 10000.0
    # content input: GPT-SoVITS hubert + 1-codebook RVQ, S3 tokens embedded directly (GPT-SoVITS2), or SSL
    # features through a trainable grouped residual VQ (ssl_grvq: vq_groups x vq_quantizers EMA codebooks)
    content: str = "hubert_vq"
    ssl_dim: int = 768
    codebook_size: int = 1024
    semantic_frame_rate: str = "25hz"
    speech_vocab_size: int = 4096 + 3
    vq_groups: int = 2
    vq_quantizers: int = 1
    vq_decay: float = 0.99
    vq_kmeans_iters: int = 50
    vq_dead_code_threshold: float = 2.0
    vq_commitment_weight: float = 1.0
    # text: phoneme / BPE ids, or per-token features (BGE-M3 style)
    text_input: str = "ids"
    n_symbols: int = 732
    text_feature_dim: int = 1024
    text_feature_hidden: int = 768
    # multi-reference timbre encoder
    mrte_hidden: int = 512
    mrte_heads: int = 4
    # reference (mel-style) encoder; v2 reads the first 704 linear bins
    ref_channels: int = 704
    style_hidden: int = 128
    style_kernel_size: int = 5
    style_heads: int = 2
    gin_channels: int = 512
    # posterior encoder
    posterior_kernel_size: int = 5
    posterior_dilation_rate: int = 1
    posterior_layers: int = 16
    with_posterior: bool = True
    # flow
    flow: str = "wavenet"
    n_flows: int = 4
    flow_kernel_size: int = 5
    flow_dilation_rate: int = 1
    flow_layers: int = 4
    # HiFi-GAN generator
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    # training
    segment_size: int = 20480
    c_mel: float = 45.0
    c_kl: float = 1.0
    # steps over which the KL weight and the posterior's noise ramp linearly from 0 to full (0: from the start);
    # on small CPU runs the full noise at init buries the posterior's mean and the decoder learns one mean
    # spectrum (posterior collapse), docs/training.md
    kl_warmup_steps: int = 0

    def __post_init__(self):
        self.validate()

    @property
    def spec_channels(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def upsample_factor(self) -> int:
        f = 1
        for r in self.upsample_rates:
            f *= r
        return f

    @property
    def content_upsample(self) -> int:
        return 2 if self.semantic_frame_rate == "25hz" else 1

    @property
    def num_codebooks(self) -> int:
        """Rows of the content codes: 1 (hubert_vq), vq_groups x vq_quantizers (ssl_grvq), 0 (tokens)."""
        return {"hubert_vq": 1, "ssl_grvq": self.vq_groups * self.vq_quantizers}.get(self.content, 0)

    def grvq_config(self) -> grvq.GRVQConfig:
        """The grouped residual VQ of ``content="ssl_grvq"`` over the projected ssl_dim features."""
        return grvq.GRVQConfig(
            dim=self.ssl_dim, groups=self.vq_groups, num_quantizers=self.vq_quantizers,
            codebook_size=self.codebook_size, decay=self.vq_decay, kmeans_init=True,
            kmeans_iters=self.vq_kmeans_iters, threshold_ema_dead_code=self.vq_dead_code_threshold,
            commitment_weight=self.vq_commitment_weight,
        )  # fmt: skip

    def validate(self) -> None:
        def need(ok: bool, key: str, msg: str):
            if not ok:
                raise ValueError(f"vits config: {key}: {msg}")

        need(self.content in CONTENT_KINDS, "content", f"{self.content!r} not in {CONTENT_KINDS}")
        need(self.text_input in TEXT_INPUTS, "text_input", f"{self.text_input!r} not in {TEXT_INPUTS}")
        need(self.flow in FLOW_KINDS, "flow", f"{self.flow!r} not in {FLOW_KINDS}")
        need(self.position in POSITIONS, "position", f"{self.position!r} not in {POSITIONS}")
        need(self.semantic_frame_rate in ("25hz", "50hz"), "semantic_frame_rate", "must be '25hz' or '50hz'")
        need(self.hidden_channels % self.n_heads == 0, "n_heads", "must divide hidden_channels")
        need(self.mrte_hidden % self.mrte_heads == 0, "mrte_heads", "must divide mrte_hidden")
        need(self.style_hidden % self.style_heads == 0, "style_heads", "must divide style_hidden")
        need(
            self.gin_channels == self.mrte_hidden,
            "gin_channels",
            "MRTE adds ge to its hidden state: must equal mrte_hidden",
        )
        need(self.inter_channels % 2 == 0, "inter_channels", "must be even (coupling halves)")
        need(
            self.ref_channels <= self.spec_channels,
            "ref_channels",
            f"exceeds {self.spec_channels} spectrogram bins",
        )
        need(
            self.upsample_factor == self.hop_length,
            "upsample_rates",
            f"product must equal hop_length {self.hop_length}",
        )
        need(
            len(self.upsample_rates) == len(self.upsample_kernel_sizes),
            "upsample_kernel_sizes",
            "one per upsample rate",
        )
        need(
            len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes),
            "resblock_dilation_sizes",
            "one per resblock kernel size",
        )
        need(
            all((k - u) % 2 == 0 for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes)),
            "upsample_kernel_sizes",
            "kernel - rate must be even so each transposed conv upsamples exactly by its rate",
        )
        need(self.resblock in ("1", "2"), "resblock", "must be '1' or '2'")
        need(self.segment_size % self.hop_length == 0, "segment_size", "must be a multiple of hop_length")
        need(self.kl_warmup_steps >= 0, "kl_warmup_steps", "must be >= 0")
        need(self.n_layers >= 2, "n_layers", "the content encoders use n_layers // 2 >= 1 layers")
        if self.content == "ssl_grvq":
            need(self.vq_groups >= 1 and self.vq_quantizers >= 1, "vq_groups", "vq_groups and vq_quantizers >= 1")
            need(self.ssl_dim % self.vq_groups == 0, "vq_groups", f"must divide ssl_dim={self.ssl_dim}")
            need(self.codebook_size >= 1, "codebook_size", "must be >= 1")
            need(0.0 <= self.vq_decay < 1.0, "vq_decay", "must be in [0, 1)")
            need(self.vq_kmeans_iters >= 1, "vq_kmeans_iters", "must be >= 1 (k-means initialises the codebooks)")

    def replace(self, **kw) -> VitsConfig:
        return dataclasses.replace(self, **kw)


def validate(section, prefix: str = "config.model") -> None:
    """Checks a VITS model section (VitsConfig fields); ConfigError starting with ``prefix``."""
    VitsConfig.from_section(section, prefix)
