"""CosyVoice2 flow-matching mel decoder: encoder, estimator, CFM and the end-to-end model."""

from sovits2_jax.models.flow.config import CFMConfig, EncoderConfig, EstimatorConfig, FlowConfig
from sovits2_jax.models.flow.flow import CausalMaskedDiffWithXvec

__all__ = ["CFMConfig", "CausalMaskedDiffWithXvec", "EncoderConfig", "EstimatorConfig", "FlowConfig"]
