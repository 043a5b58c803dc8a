"""How a speech LM picks its next token: the sampling section of a config, checked when the config is loaded
(``sovits2_jax.infer.sampling`` implements the methods)."""

from __future__ import annotations

import dataclasses

from sovits2_jax.models.config_base import ConfigBase

METHODS = ("ras", "nucleus", "random", "greedy")


@dataclasses.dataclass(frozen=True)
class SamplingConfig(ConfigBase):
    """How the next token is picked; defaults are CosyVoice2's RAS settings."""

    method: str = "ras"
    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1
    max_trials: int = 100

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"SamplingConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.temperature <= 0:
            raise ValueError(f"SamplingConfig.temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.win_size < 1 or self.max_trials < 1:
            raise ValueError("SamplingConfig.top_k must be >= 0, win_size and max_trials >= 1")


def validate(section, prefix: str = "config.sampling") -> None:
    """Checks a sampling section (SamplingConfig fields); ConfigError starting with ``prefix``."""
    SamplingConfig.from_section(section, prefix)
