"""sovits2-jax: zero-shot TTS (CosyVoice2, GPT-SoVITS2) in JAX/Flax, sharded over a device mesh."""

__version__ = "0.1.0"
