"""Model definitions (Flax NNX, used functionally). Nothing here knows about files or torch."""
