"""``SynthesizerTrn``: GPT-SoVITS's SoVITS model (v1 / v2) and the GPT-SoVITS2 VITS2 variant, in Flax NNX.

Layout (batch, time, channels). Spectrograms are [B, frames, 1025]; semantic codes are [n_q, B, T_codes]
(hubert + RVQ), [groups * quantizers, B, T_codes] (``ssl_grvq``: row ``g * quantizers + q`` is group g's residual
stage q, ``grvq.codes_to_rows``) or [B, T_codes] (S3 tokens); at 25 Hz they are repeated x2 to the 50 Hz
spectrogram frame rate.

``ssl_grvq`` keeps its codebooks outside the module: they are an EMA state (``grvq.GRVQState``), not parameters,
so every method that quantises or decodes codes takes it as ``vq_state`` (a GRVQState or its ``state_to_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models import grvq
from sovits2_jax.models.vits2.attention import split_key
from sovits2_jax.models.vits2.config import SSL_CONTENT, VitsConfig
from sovits2_jax.models.vits2.flows import transformer_flow, wavenet_flow
from sovits2_jax.models.vits2.generator import Generator
from sovits2_jax.models.vits2.posterior import PosteriorEncoder
from sovits2_jax.models.vits2.quantizer import ResidualCodebook, upsample_nearest
from sovits2_jax.models.vits2.ref_encoder import MelStyleEncoder, fuse_references
from sovits2_jax.models.vits2.text_encoder import TextEncoder
from sovits2_jax.nn.layers import Conv1d, Embed


def length_mask(lengths: jax.Array | None, length: int, batch: int) -> jax.Array:
    """[B, T, 1] float mask; all ones when lengths is None."""
    if lengths is None:
        return jnp.ones((batch, length, 1), jnp.float32)
    return (jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)[..., None]


def slice_segments(x: jax.Array, starts: jax.Array, size: int) -> jax.Array:
    """x [B, T, C] -> [B, size, C] starting at starts[b]."""
    return jax.vmap(lambda xi, s: jax.lax.dynamic_slice_in_dim(xi, s, size, axis=0))(x, starts)


class SynthesizerTrn(nnx.Module):
    def __init__(self, cfg: VitsConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.content in SSL_CONTENT:
            stride = cfg.content_upsample
            self.ssl_proj = Conv1d(cfg.ssl_dim, cfg.ssl_dim, stride, stride=stride, rngs=rngs)
            if cfg.content == "hubert_vq":
                self.quantizer = ResidualCodebook(cfg.ssl_dim, cfg.codebook_size, 1, rngs=rngs)
        else:
            self.token_embedding = Embed(cfg.speech_vocab_size, cfg.hidden_channels, rngs=rngs)
        self.enc_p = TextEncoder(cfg, rngs=rngs)
        self.ref_enc = MelStyleEncoder(
            cfg.ref_channels, cfg.style_hidden, cfg.gin_channels, cfg.style_kernel_size, cfg.style_heads, rngs=rngs
        )
        if cfg.flow == "wavenet":
            self.flow = wavenet_flow(
                cfg.inter_channels, cfg.hidden_channels, cfg.flow_kernel_size, cfg.flow_dilation_rate, cfg.flow_layers,
                cfg.n_flows, cfg.gin_channels, rngs=rngs,
            )  # fmt: skip
        else:
            rope = cfg.position == "rope"
            self.flow = transformer_flow(
                cfg.inter_channels, cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.flow_layers,
                cfg.flow_kernel_size, cfg.n_flows, cfg.gin_channels, window_size=None if rope else cfg.window_size,
                rope_theta=cfg.rope_theta if rope else None, p_dropout=cfg.p_dropout, rngs=rngs,
            )  # fmt: skip
        self.dec = Generator(
            cfg.inter_channels, cfg.resblock, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes,
            cfg.upsample_rates, cfg.upsample_initial_channel, cfg.upsample_kernel_sizes, gin_channels=cfg.gin_channels,
            rngs=rngs,
        )  # fmt: skip
        if cfg.with_posterior:
            self.enc_q = PosteriorEncoder(
                cfg.spec_channels, cfg.inter_channels, cfg.hidden_channels, cfg.posterior_kernel_size,
                cfg.posterior_dilation_rate, cfg.posterior_layers, gin_channels=cfg.gin_channels, rngs=rngs,
            )  # fmt: skip

    # -- pieces -----------------------------------------------------------------------------------------------
    def style(self, refer: jax.Array, refer_lengths: jax.Array | None = None) -> jax.Array:
        """Style vector ge [B, 1, gin] of a reference linear spectrogram [B, T, 1025]."""
        mask = length_mask(refer_lengths, refer.shape[1], refer.shape[0])
        return self.ref_enc(refer * mask, mask)

    def fused_style(self, refers: Sequence[jax.Array], weights: jax.Array | None = None) -> jax.Array:
        """Multi-reference fusion: mean (or weighted mean) of each reference's ge (shapes may differ)."""
        if not refers:
            raise ValueError("fused_style needs at least one reference spectrogram")
        return fuse_references(jnp.stack([self.style(r) for r in refers]), weights)

    def content(self, codes: jax.Array, vq_state=None) -> jax.Array:
        """Semantic codes -> content features at the spectrogram frame rate [B, T_codes * up, C] (``ssl_grvq``: the
        codebooks' entries summed per group, groups concatenated; code -1 gives zeros)."""
        if self.cfg.content == "hubert_vq":
            x = self.quantizer.decode(codes)
        elif self.cfg.content == "ssl_grvq":
            if codes.ndim != 3:
                raise ValueError(f"ssl_grvq codes must be [groups * quantizers, batch, frames], got {codes.shape}")
            x = grvq.decode(self._vq_state(vq_state), grvq.rows_to_codes(codes, self.cfg.grvq_config()))
        else:
            if codes.ndim != 2:
                raise ValueError(f"S3 token codes must be [batch, tokens], got shape {codes.shape}")
            x = self.token_embedding(codes)
        return upsample_nearest(x, self.cfg.content_upsample)

    @staticmethod
    def _vq_state(vq_state) -> grvq.GRVQState:
        if vq_state is None:
            raise ValueError("content 'ssl_grvq' needs the VQ codebooks: pass vq_state (a GRVQState or its dict)")
        return vq_state if isinstance(vq_state, grvq.GRVQState) else grvq.state_from_dict(vq_state)

    def quantize(
        self, ssl: jax.Array, vq_state, key: jax.Array | None = None, *, ssl_lengths: jax.Array | None = None,
        training: bool = False,
    ) -> grvq.GRVQOutput:  # fmt: skip
        """``ssl_grvq``: SSL features [B, T_50Hz, ssl_dim] -> ``ssl_proj`` (stride 2 at 25 Hz) -> the grouped
        residual VQ: (straight-through quantized [B, T_codes, ssl_dim], codes [groups, B, T_codes, Q], commitment
        losses [groups, Q], the new state). ``ssl_lengths`` (50 Hz frames) keeps padded frames out of the
        codebook statistics; ``training`` (static) updates the EMA codebooks and replaces dead codes, and k-means
        runs on the first call whatever the mode (``key`` draws its start and the replacement rows)."""
        if self.cfg.content != "ssl_grvq":
            raise ValueError(f"quantize is the ssl_grvq content's; this model's content is {self.cfg.content!r}")
        x = self.ssl_proj(ssl)
        mask = None
        if ssl_lengths is not None:
            mask = jnp.arange(x.shape[1])[None, :] < (jnp.asarray(ssl_lengths) // self.cfg.content_upsample)[:, None]
        return grvq.quantize(
            self._vq_state(vq_state), x, key, config=self.cfg.grvq_config(), mask=mask, training=training
        )

    def extract_codes(self, ssl: jax.Array, vq_state=None, *, ssl_lengths: jax.Array | None = None) -> jax.Array:
        """SSL features [B, T_50Hz, ssl_dim] -> codes: [1, B, T_codes] (hubert_vq, ``extract_latent``) or
        [groups * quantizers, B, T_codes] (ssl_grvq, eval mode: the codebooks are not updated; -1 past
        ``ssl_lengths``)."""
        if self.cfg.content == "ssl_grvq":
            return grvq.codes_to_rows(self.quantize(ssl, vq_state, ssl_lengths=ssl_lengths).codes)
        return self.quantizer.encode(self.ssl_proj(ssl))

    def prior(self, codes, text, ge, code_lengths=None, text_lengths=None, speed: float = 1.0, *, vq_state=None):
        """(m_p, logs_p, mask) from codes + text + style (``speed`` as GPT-SoVITS v2's decode)."""
        c = self.content(codes, vq_state)
        b, t = c.shape[:2]
        mask = length_mask(None if code_lengths is None else code_lengths * self.cfg.content_upsample, t, b)
        tmask = length_mask(text_lengths, text.shape[1], b)
        _, m_p, logs_p, mask = self.enc_p(c, mask, text, tmask, ge, speed=speed)
        return m_p, logs_p, mask

    # -- inference --------------------------------------------------------------------------------------------
    def decode(
        self,
        codes: jax.Array,
        text: jax.Array,
        refer: jax.Array | Sequence[jax.Array] | None,
        noise_scale: float = 0.5,
        key: jax.Array | None = None,
        *,
        code_lengths: jax.Array | None = None,
        text_lengths: jax.Array | None = None,
        ge: jax.Array | None = None,
        noise: jax.Array | None = None,
        speed: float = 1.0,
        vq_state=None,
    ) -> jax.Array:
        """codes + text + reference spectrogram(s) -> waveform [B, T_codes * up * hop] (32 kHz for s2).

        ``refer`` may be a list of spectrograms: their style vectors are averaged (multi-reference fusion).
        ``noise_scale`` 0 (or no key) is deterministic; ``noise`` [B, T, inter] replaces the draw from ``key``.
        A precomputed ``ge`` skips the reference encoder. ``speed`` (static) != 1 resamples the prior frames
        to int(T / speed) + 1 as GPT-SoVITS v2's decode does (> 1 speaks faster). ``ssl_grvq`` decodes its
        codes [groups * quantizers, B, T_codes] with the codebooks ``vq_state``.
        """
        if ge is None and refer is not None:
            ge = self.fused_style(refer) if isinstance(refer, (list, tuple)) else self.style(refer)
        m_p, logs_p, mask = self.prior(codes, text, ge, code_lengths, text_lengths, speed, vq_state=vq_state)
        if noise is None and key is not None:
            noise = jax.random.normal(key, m_p.shape, m_p.dtype)
        z_p = m_p if noise is None else m_p + noise * jnp.exp(logs_p) * noise_scale
        z = self.flow(z_p, mask, ge, reverse=True)
        return self.dec(z * mask, ge)[..., 0]

    # -- training ---------------------------------------------------------------------------------------------
    def __call__(
        self,
        codes: jax.Array,
        spec: jax.Array,
        spec_lengths: jax.Array,
        text: jax.Array,
        text_lengths: jax.Array,
        key: jax.Array | None,
        *,
        refer: jax.Array | None = None,
        refer_lengths: jax.Array | None = None,
        posterior_eps: jax.Array | None = None,
        slice_starts: jax.Array | None = None,
        content: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Training forward. spec [B, T, 1025] (T = content frames); ``refer`` defaults to spec itself (GPT-SoVITS)
        and may be another utterance of the same speaker (zero-shot training). Returns the sliced waveform
        ``y_hat`` [B, segment], slice starts (frames) and the latent statistics for the KL loss.
        ``posterior_eps`` [B, T, inter] and ``slice_starts`` [B] replace the draws from ``key`` (reproducibility).
        With a key and ``p_dropout`` > 0 the transformers and the reference encoder apply dropout as in training;
        without a key (or with p_dropout 0) the forward is the deterministic eval-mode one. ``content``
        [B, T_codes, C] replaces the codes' content features (``ssl_grvq`` training: the VQ's straight-through
        output, so gradients reach ``ssl_proj``); ``codes`` is then unused."""
        if not self.cfg.with_posterior:
            raise ValueError("training forward needs the posterior encoder (config with_posterior=False)")
        b, t = spec.shape[:2]
        mask = length_mask(spec_lengths, t, b)
        if key is None and (posterior_eps is None or slice_starts is None):
            raise ValueError("training forward needs a PRNG key unless posterior_eps and slice_starts are given")
        k_post, k_slice, k_drop = jax.random.split(key, 3) if key is not None else (None, None, None)
        k_ref, k_text, k_flow = split_key(k_drop if self.cfg.p_dropout > 0 else None, 3)
        if refer is None:
            ge = self.ref_enc(spec * mask, mask, dropout_key=k_ref)
        else:
            rmask = length_mask(refer_lengths, refer.shape[1], b)
            ge = self.ref_enc(refer * rmask, rmask, dropout_key=k_ref)
        c = self.content(codes) if content is None else upsample_nearest(content, self.cfg.content_upsample)
        if c.shape[1] != t:
            raise ValueError(f"content has {c.shape[1]} frames but the spectrogram has {t}")
        tmask = length_mask(text_lengths, text.shape[1], b)
        _, m_p, logs_p, _ = self.enc_p(c, mask, text, tmask, ge, dropout_key=k_text)
        z, m_q, logs_q = self.enc_q(spec, mask, ge, k_post, eps=posterior_eps)
        z_p = self.flow(z, mask, ge, dropout_key=k_flow)
        seg = self.cfg.segment_size // self.cfg.hop_length
        if t < seg:
            raise ValueError(f"spectrogram of {t} frames is shorter than the {seg}-frame training segment")
        if slice_starts is None:
            max_start = jnp.maximum(jnp.asarray(spec_lengths) - seg + 1, 1)
            slice_starts = (jax.random.uniform(k_slice, (b,)) * max_start).astype(jnp.int32)
        starts = jnp.asarray(slice_starts, jnp.int32)
        y_hat = self.dec(slice_segments(z, starts, seg), ge)[..., 0]
        return dict(
            y_hat=y_hat, ids_slice=starts, mask=mask, z=z, z_p=z_p, m_p=m_p, logs_p=logs_p, m_q=m_q, logs_q=logs_q
        )
