"""Prior encoder (GPT-SoVITS ``TextEncoder``): content frames -> transformer; text -> embedding/feature MLP ->
transformer; MRTE fuses them with the style vector; another transformer; 1x1 projection to (mean, log-std)."""

from __future__ import annotations

import jax
from flax import nnx

from sovits2_jax.models.vits2.attention import Encoder, conv1x1, split_key
from sovits2_jax.models.vits2.config import SSL_CONTENT, VitsConfig
from sovits2_jax.models.vits2.mrte import MRTE
from sovits2_jax.models.vits2.quantizer import interpolate_linear, interpolate_nearest
from sovits2_jax.nn.layers import Embed, Linear
from sovits2_jax.parallel.sharding import constrain


class TextFeatureMLP(nnx.Module):
    """Per-token text features (e.g. BGE-M3, 1024-d) -> hidden: Linear -> GELU -> Linear."""

    def __init__(self, in_features: int, mid: int, out: int, *, rngs: nnx.Rngs):
        self.fc1 = Linear(in_features, mid, rngs=rngs)
        self.fc2 = Linear(mid, out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class TextEncoder(nnx.Module):
    def __init__(self, cfg: VitsConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_channels
        self.out_channels = cfg.inter_channels
        self.text_input = cfg.text_input
        pos = dict(window_size=cfg.window_size, rope_theta=None)
        if cfg.position == "rope":
            pos = dict(window_size=None, rope_theta=cfg.rope_theta)

        def encoder(n_layers):
            return Encoder(
                h,
                cfg.filter_channels,
                cfg.n_heads,
                n_layers,
                cfg.kernel_size,
                p_dropout=cfg.p_dropout,
                rngs=rngs,
                **pos,
            )

        # quantised SSL content (hubert+VQ, ssl_grvq) arrives as ssl_dim features; S3 tokens are embedded to `hidden`
        self.ssl_proj = conv1x1(cfg.ssl_dim, h, rngs=rngs) if cfg.content in SSL_CONTENT else None
        self.encoder_ssl = encoder(cfg.n_layers // 2)
        self.encoder_text = encoder(cfg.n_layers)
        if cfg.text_input == "ids":
            self.text_embedding = Embed(cfg.n_symbols, h, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
        else:
            self.text_embedding = TextFeatureMLP(cfg.text_feature_dim, cfg.text_feature_hidden, h, rngs=rngs)
        self.mrte = MRTE(h, cfg.mrte_hidden, h, cfg.mrte_heads, rngs=rngs)
        self.encoder2 = encoder(cfg.n_layers // 2)
        self.proj = conv1x1(h, 2 * cfg.inter_channels, rngs=rngs)

    def __call__(
        self, content: jax.Array, content_mask: jax.Array, text: jax.Array, text_mask: jax.Array, ge: jax.Array | None,
        *, dropout_key: jax.Array | None = None, speed: float = 1.0,
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:  # fmt: skip
        """content [B, T, C], text ids [B, S] (or features [B, S, F]), masks [B, *, 1] -> (h, m, logs).
        ``dropout_key`` enables the transformers' dropout (training). ``speed`` != 1 (GPT-SoVITS v2) resamples the
        frames linearly to int(T / speed) + 1 before the projection; the returned mask is resampled too."""
        k_ssl, k_text, k_out = split_key(dropout_key, 3)
        y = content
        if self.ssl_proj is not None:
            y = self.ssl_proj(y * content_mask) * content_mask
        y = self.encoder_ssl(y * content_mask, content_mask, dropout_key=k_ssl)
        if self.text_input == "ids" and text.ndim != 2:
            raise ValueError(f"text ids must be [batch, tokens], got shape {text.shape}")
        if self.text_input == "features" and text.ndim != 3:
            raise ValueError(f"text features must be [batch, tokens, features], got shape {text.shape}")
        t = self.text_embedding(text)
        t = self.encoder_text(t * text_mask, text_mask, dropout_key=k_text)
        y = self.mrte(y, content_mask, t, text_mask, ge)
        y = self.encoder2(y * content_mask, content_mask, dropout_key=k_out)
        y = constrain(y, ("batch", "length", "embed"))
        if speed != 1:
            size = int(y.shape[1] / speed) + 1
            y = interpolate_linear(y, size)
            content_mask = interpolate_nearest(content_mask, size)
        stats = self.proj(y) * content_mask
        return y, stats[..., : self.out_channels], stats[..., self.out_channels :], content_mask
