"""Benchmarks printing our time against the PyTorch reference measured in the same process."""
