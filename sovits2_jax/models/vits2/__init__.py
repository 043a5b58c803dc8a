"""VITS decoder: GPT-SoVITS's SoVITS ``SynthesizerTrn`` (v1 / v2) and the GPT-SoVITS2 VITS2 variant."""

from sovits2_jax.models.vits2.config import VitsConfig
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn

__all__ = ["SynthesizerTrn", "VitsConfig"]
