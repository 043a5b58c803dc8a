"""JAX's persistent compilation cache on disk, so a second process serving the same shapes does not recompile.

``enable`` points ``jax_compilation_cache_dir`` at a directory (default ``$SOVITS2_JAX_CACHE`` or
``~/.cache/sovits2_jax/xla``) and lowers the thresholds (JAX caches only programs that took >= 1 s to compile by
default) so every inference bucket is written. ``CacheEvents`` counts JAX's cache hit / miss monitoring events.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "SOVITS2_JAX_CACHE"
HITS = "/jax/compilation_cache/cache_hits"
MISSES = "/jax/compilation_cache/cache_misses"


def default_dir() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "sovits2_jax" / "xla")


def enable(cache_dir: str | Path | None = None, *, min_compile_secs: float = 0.0) -> Path:
    """Turns the persistent cache on for this process (call before the first compilation); returns its path."""
    path = Path(cache_dir) if cache_dir else default_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size threshold
    return path


class CacheEvents:
    """Counts persistent-cache hits and misses reported through ``jax.monitoring`` while registered."""

    def __init__(self):
        self.hits = 0
        self.misses = 0
        jax.monitoring.register_event_listener(self._on_event)

    def _on_event(self, event: str, **_):
        if event == HITS:
            self.hits += 1
        elif event == MISSES:
            self.misses += 1
