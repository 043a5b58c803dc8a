"""Shared layers: torch-compatible linear/conv/norm layers, RoPE, attention and masks."""
