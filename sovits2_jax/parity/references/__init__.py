"""PyTorch reference builders and parity cases, one module per model family (qwen2, llm, flow, hift, vits)."""
