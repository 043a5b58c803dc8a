"""Conditional flow matching (CausalConditionalCFM): Euler sampling with classifier-free guidance, and the loss.

Both are pure functions of the estimator and explicit inputs: the initial noise is an argument of ``sample``; the
loss takes its random draws (t, noise, CFG keep flags) either explicitly (``flow_matching_loss``) or from a key
(``draw_loss_randomness``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sovits2_jax.models.flow.config import CFMConfig

Estimator = Callable[..., jax.Array]


def time_schedule(n_timesteps: int, scheduler: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """(t_k, dt_k) for the k = 0..n-1 Euler steps, in float32 as the reference accumulates them.

    t_span = linspace(0, 1, n+1), warped by 1 - cos(t pi/2) for "cosine"; the reference advances t by dt and then
    sets dt = t_span[k+1] - t, so t is a running float32 sum, reproduced here.
    """
    span = np.linspace(0.0, 1.0, n_timesteps + 1).astype(np.float32)
    if scheduler == "cosine":
        span = (np.float32(1.0) - np.cos(span * np.float32(0.5 * np.pi))).astype(np.float32)
    ts, dts = [], []
    t, dt = span[0], np.float32(span[1] - span[0])
    for k in range(1, n_timesteps + 1):
        ts.append(t)
        dts.append(dt)
        t = np.float32(t + dt)
        if k < n_timesteps:
            dt = np.float32(span[k + 1] - t)
    return np.asarray(ts, np.float32), np.asarray(dts, np.float32)


def sample(
    estimator: Estimator,
    noise: jax.Array,
    mask: jax.Array,
    mu: jax.Array,
    spks: jax.Array,
    cond: jax.Array,
    cfg: CFMConfig,
    *,
    streaming=False,
    temperature: float = 1.0,
    n_timesteps: int | None = None,
    step_state=None,
):
    """Integrates dx/dt = v from ``noise * temperature`` at t=0 to t=1; returns the mel [B, T, M] (float32).

    Guidance: the conditional and the unconditional (mu, spks, cond zeroed) velocities come from one estimator call
    on a doubled batch; v = (1 + rate) v_cond - rate v_uncond. ``step_state`` (a pytree stacked over the Euler
    steps, e.g. a streaming cache) goes to the estimator as ``step_state=`` at each step; the estimator then returns
    (velocity, new state) and ``sample`` returns (mel, new states stacked over the steps).
    """
    n = cfg.n_timesteps if n_timesteps is None else n_timesteps
    ts, dts = time_schedule(n, cfg.t_scheduler)
    rate = cfg.inference_cfg_rate
    b = noise.shape[0]
    mask2 = jnp.concatenate([mask, mask], axis=0)
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=0)
    spks2 = jnp.concatenate([spks, jnp.zeros_like(spks)], axis=0)
    cond2 = jnp.concatenate([cond, jnp.zeros_like(cond)], axis=0)

    def step(x, inputs):
        t, dt, state = inputs
        extra = {} if step_state is None else {"step_state": state}
        out = estimator(
            jnp.concatenate([x, x], axis=0),
            mask2,
            mu2,
            jnp.full((2 * b,), t, x.dtype),
            spks2,
            cond2,
            streaming=streaming,
            **extra,
        )
        v, new_state = (out, None) if step_state is None else out
        v = (1.0 + rate) * v[:b] - rate * v[b:]
        return x + dt.astype(x.dtype) * v, new_state

    x0 = noise.astype(mu.dtype) * temperature
    x, new_states = jax.lax.scan(step, x0, (jnp.asarray(ts), jnp.asarray(dts), step_state))
    return x.astype(jnp.float32) if step_state is None else (x.astype(jnp.float32), new_states)


def draw_loss_randomness(key: jax.Array, shape: tuple[int, int, int], cfg: CFMConfig) -> dict[str, jax.Array]:
    """The loss's random draws: t ~ U(0,1) [B], noise ~ N(0,1) [B,T,M], keep_cond = U(0,1) > cfg_rate [B]."""
    kt, kz, kc = jax.random.split(key, 3)
    b = shape[0]
    return {
        "t": jax.random.uniform(kt, (b,)),
        "noise": jax.random.normal(kz, shape),
        "keep_cond": jax.random.uniform(kc, (b,)) > cfg.training_cfg_rate,
    }


def flow_matching_loss(
    estimator: Estimator,
    x1: jax.Array,
    mask: jax.Array,
    mu: jax.Array,
    spks: jax.Array,
    cond: jax.Array,
    cfg: CFMConfig,
    *,
    t: jax.Array,
    noise: jax.Array,
    keep_cond: jax.Array,
    streaming=False,
) -> jax.Array:
    """The reference's compute_loss with its draws given: t [B] uniform (cosine-warped when the scheduler is
    "cosine", as the reference also does in training), noise [B, T, M], keep_cond [B] bool (False drops mu, spks
    and cond for CFG). Loss = masked squared error summed / (valid frames * M)."""
    t = t.astype(x1.dtype)
    if cfg.t_scheduler == "cosine":
        t = 1.0 - jnp.cos(t * 0.5 * jnp.pi)
    tt = t[:, None, None]
    y = (1.0 - (1.0 - cfg.sigma_min) * tt) * noise + tt * x1
    target = x1 - (1.0 - cfg.sigma_min) * noise
    if cfg.training_cfg_rate > 0:
        keep = keep_cond.astype(x1.dtype)
        mu, spks, cond = mu * keep[:, None, None], spks * keep[:, None], cond * keep[:, None, None]
    pred = estimator(y, mask, mu, t, spks, cond, streaming=streaming)
    m = mask[..., None].astype(pred.dtype)
    err = jnp.square(pred.astype(jnp.float32) * m - target.astype(jnp.float32) * m)
    return jnp.sum(err) / (jnp.sum(m) * x1.shape[-1])
