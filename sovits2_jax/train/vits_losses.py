"""VITS training objectives (GPT-SoVITS ``s2_train``): KL between the flowed posterior sample and the prior,
mel L1 on the generated segment, and the LSGAN / feature-matching terms of the MPD + scale discriminator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sovits2_jax.audio.spectrogram import mel_spectrogram, spec_to_mel
from sovits2_jax.models.vits2.synthesizer import slice_segments
from sovits2_jax.train.gan_losses import (
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)


def kl_loss(z_p: jax.Array, logs_q: jax.Array, m_p: jax.Array, logs_p: jax.Array, mask: jax.Array) -> jax.Array:
    """sum(mask * (logs_p - logs_q - 1/2 + (z_p - m_p)^2 exp(-2 logs_p) / 2)) / sum(mask), in float32.

    As in GPT-SoVITS, the divisor counts valid frames (mask [B, T, 1]), not frames x channels."""
    z_p, logs_q, m_p, logs_p, mask = (a.astype(jnp.float32) for a in (z_p, logs_q, m_p, logs_p, mask))
    kl = logs_p - logs_q - 0.5 + 0.5 * jnp.square(z_p - m_p) * jnp.exp(-2.0 * logs_p)
    return jnp.sum(kl * mask) / jnp.sum(mask)


def segment_targets(cfg, wav: jax.Array, spec: jax.Array, starts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(real waveform segment [B, segment], its log-mel [B, frames, mels]) at the generator's slice starts."""
    frames = cfg.segment_size // cfg.hop_length
    mel = spec_to_mel(spec, sampling_rate=cfg.sampling_rate, n_fft=cfg.n_fft, num_mels=cfg.n_mel_channels)
    y_mel = slice_segments(mel, starts, frames)
    y = slice_segments(wav[..., None], starts * cfg.hop_length, cfg.segment_size)[..., 0]
    return y, y_mel


def generated_mel(cfg, y_hat: jax.Array) -> jax.Array:
    return mel_spectrogram(
        y_hat, sampling_rate=cfg.sampling_rate, n_fft=cfg.n_fft, hop_size=cfg.hop_length, win_size=cfg.win_length,
        num_mels=cfg.n_mel_channels,
    )  # fmt: skip


def warmup_fraction(cfg, step) -> jax.Array:
    """min(step / cfg.kl_warmup_steps, 1) (1 without a warm-up or a step: eval scores the full objective)."""
    if step is None or cfg.kl_warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(jnp.asarray(step, jnp.float32) / cfg.kl_warmup_steps, 1.0)


def generator_losses(cfg, out: dict, y_mel: jax.Array, disc_out=None, kl_scale=1.0) -> dict[str, jax.Array]:
    """GPT-SoVITS generator objective: loss_gen + loss_fm + c_mel * mel L1 + kl_scale * c_kl * KL.

    ``out`` is the synthesizer's training forward; ``disc_out`` = D(real, generated) or None (reconstruction
    terms only, e.g. before the discriminator starts); ``kl_scale`` is the warm-up's fraction."""
    y_hat_mel = generated_mel(cfg, out["y_hat"])
    terms = {
        "loss_mel": jnp.mean(jnp.abs(y_mel - y_hat_mel)) * cfg.c_mel,
        "loss_kl": kl_loss(out["z_p"], out["logs_q"], out["m_p"], out["logs_p"], out["mask"]) * cfg.c_kl * kl_scale,
    }
    if disc_out is not None:
        _, d_gs, fmap_rs, fmap_gs = disc_out
        terms["loss_gen"] = generator_adversarial_loss(d_gs)
        terms["loss_fm"] = feature_matching_loss([[jax.lax.stop_gradient(f) for f in m] for m in fmap_rs], fmap_gs)
    terms["loss"] = sum(terms.values())
    return terms


def discriminator_losses(disc_out) -> dict[str, jax.Array]:
    d_rs, d_gs, _, _ = disc_out
    loss = discriminator_adversarial_loss(d_rs, d_gs)
    return {"loss_disc": loss, "loss": loss}
