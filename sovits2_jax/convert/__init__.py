"""PyTorch <-> JAX checkpoint conversion: declarative key tables, streaming readers/writers, parity harness."""
