"""CausalMaskedDiffWithXvec: CosyVoice2's token-to-mel flow model (batched inference and the training loss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.flow import cfm
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.models.flow.encoder import UpsampleConformerEncoder
from sovits2_jax.models.flow.estimator import CausalConditionalDecoder
from sovits2_jax.nn.layers import Embed, Linear


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _lengths_mask(lengths: jax.Array, length: int) -> jax.Array:
    return jnp.arange(length)[None, :] < lengths[:, None]


def concat_padded(a: jax.Array, a_len: jax.Array, b: jax.Array, b_len: jax.Array) -> jax.Array:
    """Per row, a[:a_len] ++ b[:b_len] ++ zeros, as [B, Ta + Tb] (static shape)."""
    if a.shape[1] == 0:
        return jnp.where(_lengths_mask(b_len, b.shape[1]), b, 0)
    total = a.shape[1] + b.shape[1]
    j = jnp.broadcast_to(jnp.arange(total)[None, :], (a.shape[0], total))
    ga = jnp.take_along_axis(a, jnp.clip(j, 0, a.shape[1] - 1), axis=1)
    gb = jnp.take_along_axis(b, jnp.clip(j - a_len[:, None], 0, b.shape[1] - 1), axis=1)
    return jnp.where(j < a_len[:, None], ga, jnp.where(j < (a_len + b_len)[:, None], gb, 0))


def shift_left(x: jax.Array, offsets: jax.Array, lengths: jax.Array) -> jax.Array:
    """Per row, x[offset : offset + length] moved to the front of [B, T, C], zeros after."""
    t = x.shape[1]
    j = jnp.arange(t)[None, :]
    idx = jnp.clip(j + offsets[:, None], 0, t - 1)
    out = jnp.take_along_axis(x, idx[..., None], axis=1)
    return out * (j < lengths[:, None])[..., None].astype(x.dtype)


class CausalMaskedDiffWithXvec(nnx.Module):
    """Speech tokens + x-vector + prompt mel -> mel frames (token_mel_ratio frames per token)."""

    def __init__(self, cfg: FlowConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.input_embedding = Embed(cfg.vocab_size, cfg.input_size, rngs=rngs)
        self.speaker_projection = Linear(cfg.spk_embed_dim, cfg.output_size, axes=("speaker", "mel"), rngs=rngs)
        self.encoder = UpsampleConformerEncoder(cfg.encoder, rngs=rngs)
        self.encoder_proj = Linear(cfg.encoder.output_size, cfg.output_size, axes=("embed", "mel"), rngs=rngs)
        self.estimator = CausalConditionalDecoder(cfg.estimator, rngs=rngs)

    def project_speaker(self, embedding: jax.Array) -> jax.Array:
        return self.speaker_projection(l2_normalize(embedding))

    def encode(self, tokens, lengths, *, streaming=False, lookahead_lengths=None, dropout_key=None):
        """tokens [B, T] -> (mu [B, ratio*T, M], valid [B, ratio*T]); negative ids embed as id 0."""
        tok_mask = _lengths_mask(lengths, tokens.shape[1])[..., None]
        if lookahead_lengths is not None:
            tok_mask = _lengths_mask(lookahead_lengths, tokens.shape[1])[..., None]
        x = self.input_embedding(jnp.maximum(tokens, 0)) * tok_mask.astype(jnp.float32)
        h, valid = self.encoder(
            x, lengths, streaming=streaming, lookahead_lengths=lookahead_lengths, dropout_key=dropout_key
        )
        return self.encoder_proj(h), valid

    def inference(
        self,
        tokens,
        token_lengths,
        prompt_tokens,
        prompt_token_lengths,
        prompt_feat,
        prompt_feat_lengths,
        embedding,
        noise,
        *,
        streaming=False,
        finalize=True,
        n_timesteps: int | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Batched zero-shot mel generation; returns (mel [B, Tm, M] after each row's prompt frames, lengths [B]).

        Row b encodes prompt_tokens[b, :P_b] ++ tokens[b, :L_b]; prompt_feat[b, :F_b] conditions the first F_b
        frames; mel frames F_b .. ratio*(P_b + L_b) are returned (shifted to the front). Without ``finalize`` the
        last ``pre_lookahead_len`` tokens are only look-ahead context (streaming chunks), so ratio*that fewer
        frames come out (``streaming`` and ``finalize`` may be traced booleans). ``noise`` [B, Tm, M] with
        Tm = ratio * (prompt_tokens.shape[1] + tokens.shape[1]) is the initial sample (CosyVoice2 uses one fixed
        N(0,1) draw, the same for every row).
        """
        cfg = self.cfg
        ratio = cfg.token_mel_ratio
        total = prompt_tokens.shape[1] + tokens.shape[1]
        if noise.shape[1:] != (ratio * total, cfg.output_size) or noise.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"noise must be [{tokens.shape[0]}, {ratio * total}, {cfg.output_size}], got {tuple(noise.shape)}"
            )
        all_tokens = concat_padded(prompt_tokens, prompt_token_lengths, tokens, token_lengths)
        all_lengths = prompt_token_lengths + token_lengths
        lookahead = cfg.encoder.pre_lookahead_len
        enc_lengths = all_lengths - jnp.where(jnp.asarray(finalize), 0, lookahead).astype(all_lengths.dtype)
        mu, valid = self.encode(all_tokens, enc_lengths, streaming=streaming, lookahead_lengths=all_lengths)
        frames = mu.shape[1]
        spks = self.project_speaker(embedding)
        feat = jnp.zeros((prompt_feat.shape[0], frames, cfg.output_size), mu.dtype)
        feat = feat.at[:, : min(prompt_feat.shape[1], frames)].set(prompt_feat[:, :frames].astype(mu.dtype))
        cond = feat * _lengths_mask(prompt_feat_lengths, frames)[..., None].astype(mu.dtype)
        mask = valid.astype(mu.dtype)
        mel = cfm.sample(
            self.estimator, noise, mask, mu, spks, cond, cfg.cfm, streaming=streaming, n_timesteps=n_timesteps
        )
        out_lengths = ratio * enc_lengths - prompt_feat_lengths
        return shift_left(mel, prompt_feat_lengths, out_lengths), out_lengths

    def loss_with_draws(
        self,
        batch: dict,
        *,
        streaming,
        cond_lengths,
        t,
        noise,
        keep_cond,
        dropout_key=None,
    ) -> jax.Array:
        """Training loss with every random draw given (see ``draw_training_randomness``).

        batch: speech_token [B, L], speech_token_len [B], speech_feat [B, ratio*L, M], embedding [B, E].
        cond_lengths [B]: the prompt prefix of the target mel given as condition (0 = none).
        """
        cfg = self.cfg
        tokens, lengths, feat = batch["speech_token"], batch["speech_token_len"], batch["speech_feat"]
        if feat.shape[1] != cfg.token_mel_ratio * tokens.shape[1]:
            raise ValueError(
                f"speech_feat has {feat.shape[1]} frames; expected token_mel_ratio * {tokens.shape[1]} tokens"
            )
        spks = self.project_speaker(batch["embedding"])
        mu, valid = self.encode(tokens, lengths, streaming=streaming, dropout_key=dropout_key)
        cond = feat * _lengths_mask(cond_lengths, feat.shape[1])[..., None].astype(feat.dtype)
        return cfm.flow_matching_loss(
            self.estimator,
            feat,
            valid.astype(mu.dtype),
            mu,
            spks,
            cond,
            cfg.cfm,
            t=t,
            noise=noise,
            keep_cond=keep_cond,
            streaming=streaming,
        )

    def loss(self, batch: dict, key: jax.Array, *, train: bool = True) -> jax.Array:
        """Training loss with all randomness from ``key`` (encoder dropout only when ``train``)."""
        kd, kdrop = jax.random.split(key)
        draws = draw_training_randomness(kd, batch, self.cfg)
        return self.loss_with_draws(batch, dropout_key=kdrop if train else None, **draws)


def draw_training_randomness(key: jax.Array, batch: dict, cfg: FlowConfig) -> dict:
    """The reference's per-batch draws: streaming with p 0.5; per row, with p 0.5 a condition prefix of
    U{0..floor(0.3 * feat_len)} frames; then the CFM draws (t, noise, CFG keep flags)."""
    k_stream, k_use, k_len, k_cfm = jax.random.split(key, 4)
    feat = batch["speech_feat"]
    b = feat.shape[0]
    feat_len = batch["speech_feat_len"]
    max_prefix = jnp.floor(jnp.float32(0.3) * feat_len.astype(jnp.float32)).astype(jnp.int32)
    prefix = jnp.floor(jax.random.uniform(k_len, (b,)) * (max_prefix + 1).astype(jnp.float32)).astype(jnp.int32)
    use = jax.random.uniform(k_use, (b,)) >= 0.5
    draws = cfm.draw_loss_randomness(k_cfm, feat.shape, cfg.cfm)
    return {
        "streaming": jax.random.uniform(k_stream, ()) < 0.5,
        "cond_lengths": jnp.where(use, jnp.minimum(prefix, max_prefix), 0),
        **draws,
    }
