"""Frozen configs of the CosyVoice2 flow-matching mel decoder (``CausalMaskedDiffWithXvec``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sovits2_jax.models.config_base import ConfigBase


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value}")


@dataclass(frozen=True)
class EncoderConfig(ConfigBase):
    """UpsampleConformerEncoder: linear input layer, ESPnet rel-pos conformer blocks (no conv module, no macaron)."""

    config_name = "encoder config"

    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    static_chunk_size: int = 25
    pre_lookahead_len: int = 3
    upsample_stride: int = 2
    key_bias: bool = True
    # Zero the padded frames before the pre-lookahead conv so that a padded batch gives what each item gives alone
    # (the reference lets the last pre_lookahead_len tokens of a shorter item see the embedding of padding).
    zero_padding_before_lookahead: bool = True

    def __post_init__(self):
        _check_positive(
            "encoder",
            output_size=self.output_size,
            attention_heads=self.attention_heads,
            num_blocks=self.num_blocks,
            static_chunk_size=self.static_chunk_size,
            upsample_stride=self.upsample_stride,
        )
        if self.output_size % self.attention_heads:
            raise ValueError(
                f"encoder.attention_heads={self.attention_heads} must divide encoder.output_size={self.output_size}"
            )


@dataclass(frozen=True)
class EstimatorConfig(ConfigBase):
    """CausalConditionalDecoder (causal 1-D U-Net with transformer blocks)."""

    config_name = "estimator config"

    in_channels: int = 320
    out_channels: int = 80
    channels: tuple[int, ...] = (256,)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    static_chunk_size: int = 50
    num_decoding_left_chunks: int = -1

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        _check_positive(
            "estimator",
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            num_heads=self.num_heads,
            attention_head_dim=self.attention_head_dim,
            static_chunk_size=self.static_chunk_size,
        )
        if len(self.channels) != 1:
            raise ValueError(
                f"estimator.channels={self.channels}: only one U-Net level is supported (CosyVoice2 uses (256,))"
            )


@dataclass(frozen=True)
class CFMConfig(ConfigBase):
    """CausalConditionalCFM: Euler sampling with classifier-free guidance; flow-matching loss."""

    config_name = "cfm config"

    sigma_min: float = 1e-6
    t_scheduler: str = "cosine"
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7
    n_timesteps: int = 10

    def __post_init__(self):
        if self.t_scheduler not in ("cosine", "linear"):
            raise ValueError(f"cfm.t_scheduler must be 'cosine' or 'linear', got {self.t_scheduler!r}")
        _check_positive("cfm", n_timesteps=self.n_timesteps)


@dataclass(frozen=True)
class FlowConfig(ConfigBase):
    """CausalMaskedDiffWithXvec: token embedding + x-vector projection + encoder + CFM decoder."""

    config_name = "flow config"

    vocab_size: int = 6561
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    token_mel_ratio: int = 2
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    cfm: CFMConfig = field(default_factory=CFMConfig)

    def __post_init__(self):
        for name, cls in (("encoder", EncoderConfig), ("estimator", EstimatorConfig), ("cfm", CFMConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls.from_dict(value))
        if self.encoder.input_size != self.input_size:
            raise ValueError(f"encoder.input_size={self.encoder.input_size} must equal input_size={self.input_size}")
        if self.token_mel_ratio != self.encoder.upsample_stride:
            raise ValueError(
                f"token_mel_ratio={self.token_mel_ratio} must equal encoder.upsample_stride="
                f"{self.encoder.upsample_stride}"
            )
        expected_in = 4 * self.output_size
        if self.estimator.in_channels != expected_in:
            raise ValueError(
                f"estimator.in_channels={self.estimator.in_channels} must be 4 * output_size = {expected_in} "
                "(x, mu, speaker and condition are concatenated)"
            )
        if self.estimator.out_channels != self.output_size:
            raise ValueError(
                f"estimator.out_channels={self.estimator.out_channels} must equal output_size={self.output_size}"
            )


def validate(section, prefix: str = "config.model") -> None:
    """Checks a flow model section (a FlowConfig as a dict); ConfigError starting with ``prefix``."""
    FlowConfig.from_section(section, prefix)
