"""Inference-time code: KV-cache generation, sampling, bistream text-to-tokens, streaming flow. Imports models;
models never imports infer."""
