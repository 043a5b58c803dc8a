"""Offline preparation: built-in corpus, LibriTTS download, Kaldi files (from a LibriTTS tree or a GPT-SoVITS list),
ONNX extractors, offline models, Parquet writer, TFDS source.

Each CLI (``python -m sovits2_jax.data.prep.<module>``) is an absl app in the package's one CLI style
(``sovits2_jax.cli``): flags defined under ``__main__``, ``main(argv)`` reading ``absl.flags.FLAGS``.
"""

import warnings

# A CLI here run as `python -m sovits2_jax.data.prep.X` that starts forkserver workers with X preloaded makes each
# worker re-run X as its main module, and runpy then warns that X was already imported: harmless, once per worker.
warnings.filterwarnings("ignore", message=r".*found in sys\.modules after import of package", category=RuntimeWarning)
