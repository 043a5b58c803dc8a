"""Offline evaluation of synthesised speech (``python -m sovits2_jax.eval``): ``evaluate.evaluate(wav_dir)``."""
