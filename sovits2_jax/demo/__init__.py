"""The main job's last steps on the built-in recipe (``launch/recipes/builtin.sh``, ``make demo``).

``python -m sovits2_jax.demo.synthesize``: zero-shot speech for held-out dev sentences, each prompted by other dev
utterances of the same speaker, in the evaluator's layout. ``python -m sovits2_jax.demo.report``: report.md,
report.json and PNGs (training curves, mels beside their ground truth) from a recipe work directory.
"""
