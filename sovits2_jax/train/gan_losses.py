"""GAN losses of CosyVoice2's HiFT training (HiFi-GAN LSGAN terms, feature matching, TPR, mel L1, F0 L1).

Every function takes the lists the discriminators return (one score / feature-map list per sub-discriminator)
and reproduces the reference's arithmetic, including its quirks: the feature-matching sum is doubled inside
``feature_matching_loss`` *and* weighted by ``feat_match_weight`` (2) in the total, as CosyVoice2 does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

# HiFiGan defaults in CosyVoice2 (multi_mel_spectral_recon_loss_weight, feat_match_loss_weight, tpr weight/tau).
MEL_WEIGHT = 45.0
FEAT_MATCH_WEIGHT = 2.0
TPR_WEIGHT = 1.0
TPR_TAU = 0.04


@dataclass(frozen=True)
class GanLossWeights:
    """Weights of the HiFT generator objective (the F0 term has weight 1 in the reference)."""

    mel: float = MEL_WEIGHT
    feat_match: float = FEAT_MATCH_WEIGHT
    tpr: float = TPR_WEIGHT
    tpr_tau: float = TPR_TAU
    f0: float = 1.0


def generator_adversarial_loss(d_gs: Sequence[jax.Array]) -> jax.Array:
    """LSGAN generator term: sum over discriminators of mean((1 - D(G))^2)."""
    return sum(jnp.mean(jnp.square(1.0 - dg)) for dg in d_gs)


def discriminator_adversarial_loss(d_rs: Sequence[jax.Array], d_gs: Sequence[jax.Array]) -> jax.Array:
    """LSGAN discriminator term: sum of mean((1 - D(real))^2) + mean(D(G)^2)."""
    return sum(jnp.mean(jnp.square(1.0 - dr)) + jnp.mean(jnp.square(dg)) for dr, dg in zip(d_rs, d_gs))


def feature_matching_loss(fmap_rs: Sequence[Sequence[jax.Array]], fmap_gs: Sequence[Sequence[jax.Array]]) -> jax.Array:
    """2 * sum over every feature map of mean |real - generated| (HiFi-GAN's definition)."""
    total = sum(jnp.mean(jnp.abs(r - g)) for maps_r, maps_g in zip(fmap_rs, fmap_gs) for r, g in zip(maps_r, maps_g))
    return 2.0 * total


def lower_median(x: jax.Array) -> jax.Array:
    """torch.median semantics: the lower of the two middle values for an even count (no averaging)."""
    flat = jnp.sort(x.reshape(-1))
    return flat[(flat.shape[0] - 1) // 2]


def tpr_loss(d_rs: Sequence[jax.Array], d_gs: Sequence[jax.Array], tau: float = TPR_TAU) -> jax.Array:
    """Truncated pointwise relativistic loss (HiFTNet / CosyVoice2 ``tpr_loss``).

    Per discriminator: m = median(dr - dg); L = mean((dr - dg - m)^2 over entries with dr < dg + m);
    contributes tau - relu(tau - L) = min(L, tau). An empty selection (all differences equal) contributes 0
    where the reference would produce NaN.
    """
    total = 0.0
    for dr, dg in zip(d_rs, d_gs):
        diff = dr - dg
        m = lower_median(diff)
        mask = (dr < dg + m).astype(diff.dtype)
        count = jnp.sum(mask)
        rel = jnp.sum(jnp.square(diff - m) * mask) / jnp.maximum(count, 1.0)
        total = total + (tau - jax.nn.relu(tau - rel))
    return total


def mel_l1_loss(
    real: jax.Array, generated: jax.Array, mel_fns: Sequence[Callable[[jax.Array], jax.Array]]
) -> jax.Array:
    """Sum over mel transforms of mean |mel(generated) - mel(real)| (CosyVoice2 ``mel_loss``)."""
    return sum(jnp.mean(jnp.abs(fn(generated) - fn(real))) for fn in mel_fns)


def f0_l1_loss(predicted_f0: jax.Array, target_f0: jax.Array) -> jax.Array:
    """mean |predicted - target| over every frame, padding included, as the reference (F.l1_loss)."""
    if predicted_f0.shape != target_f0.shape:
        raise ValueError(f"f0 loss: predicted {predicted_f0.shape} and target {target_f0.shape} shapes differ")
    return jnp.mean(jnp.abs(predicted_f0 - target_f0))


def hift_generator_loss(
    real: jax.Array,
    generated: jax.Array,
    predicted_f0: jax.Array,
    target_f0: jax.Array,
    disc_out,
    mel_fns: Sequence[Callable[[jax.Array], jax.Array]],
    weights: GanLossWeights = GanLossWeights(),
) -> dict[str, jax.Array]:
    """HiFT generator objective; ``disc_out`` = (d_rs, d_gs, fmap_rs, fmap_gs) of D(real, generated)."""
    d_rs, d_gs, fmap_rs, fmap_gs = disc_out
    terms = {
        "loss_gen": generator_adversarial_loss(d_gs),
        "loss_fm": feature_matching_loss(fmap_rs, fmap_gs),
        "loss_mel": mel_l1_loss(real, generated, mel_fns),
        "loss_tpr": tpr_loss(d_gs, d_rs, weights.tpr_tau) if weights.tpr else jnp.zeros(()),
        "loss_f0": f0_l1_loss(predicted_f0, target_f0),
    }
    terms["loss"] = (
        terms["loss_gen"]
        + weights.feat_match * terms["loss_fm"]
        + weights.mel * terms["loss_mel"]
        + weights.tpr * terms["loss_tpr"]
        + weights.f0 * terms["loss_f0"]
    )
    return terms


def hift_discriminator_loss(disc_out, weights: GanLossWeights = GanLossWeights()) -> dict[str, jax.Array]:
    """HiFT discriminator objective on D(real, generated.detach())."""
    d_rs, d_gs, _, _ = disc_out
    terms = {
        "loss_disc": discriminator_adversarial_loss(d_rs, d_gs),
        "loss_tpr": tpr_loss(d_rs, d_gs, weights.tpr_tau) if weights.tpr else jnp.zeros(()),
    }
    terms["loss"] = terms["loss_disc"] + weights.tpr * terms["loss_tpr"]
    return terms
