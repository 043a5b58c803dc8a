"""The systems the demo synthesises with: one module per family, found by name (``demo.synthesize --family``)."""
