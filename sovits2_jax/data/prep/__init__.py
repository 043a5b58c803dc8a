"""Offline preparation: built-in corpus, LibriTTS download, Kaldi files (from a LibriTTS tree or a GPT-SoVITS list),
ONNX extractors, offline models, Parquet writer, TFDS source.

Each CLI (``python -m sovits2_jax.data.prep.<module>``) is an absl app in the package's one CLI style
(``sovits2_jax.cli``): flags defined under ``__main__``, ``main(argv)`` reading ``absl.flags.FLAGS``.
"""
