"""Grouped residual vector quantisation with EMA codebooks (vector-quantize-pytorch's ``GroupedResidualVQ`` over
``ResidualVQ`` / ``VectorQuantize`` with Euclidean codebooks), functional JAX.

The feature axis (``dim``) is cut into ``groups`` equal chunks; each chunk goes through ``num_quantizers`` residual
stages, each with its own codebook of ``codebook_size`` codes. Per stage, as vector-quantize-pytorch does it:

1. k-means initialisation on the first batch (``kmeans_init``): ``codebook_size`` distinct rows of the stage's
   input drawn at random, ``kmeans_iters`` Lloyd iterations (an empty cluster keeps its centre), then
   ``embed_avg = centre * count``, ``cluster_size = count`` and the codebook normalised from them (below);
2. nearest code by squared Euclidean distance; codes and the quantised vectors use the codebook before this step's
   update;
3. training only, the EMA update: ``cluster_size`` and ``embed_avg`` move towards this batch's counts and sums with
   weight ``1 - decay``, and ``embed = embed_avg / smoothed(cluster_size)`` with Laplace smoothing (``eps``);
4. training only, dead codes (``cluster_size < threshold_ema_dead_code``) are replaced by distinct random rows of
   the stage's input (when there are more dead codes than rows, a random subset as large as the rows); a replaced
   code gets ``cluster_size = reset`` and ``embed_avg = row * reset``;
5. commitment loss ``commitment_weight * mean((stop_gradient(q) - r)^2)`` over valid frames, and the
   straight-through output ``r + stop_gradient(q - r)``; the next stage's input is ``r - stop_gradient(output)``.

Padded frames (``mask`` False) are left out of k-means, the EMA sums, the dead-code rows and the loss; their codes
are -1 and their output is zero. vector-quantize-pytorch returns a zero loss in eval mode; here the loss is always
computed (the caller decides whether to use it).

State: an explicit pytree, ``GRVQState`` (not NNX variables: it is not trained by the optimiser and ``split_params``
keeps models Param-only), carried next to the params and returned updated by every call::

    embed        [groups, num_quantizers, codebook_size, dim // groups]  the codebooks
    embed_avg    [groups, num_quantizers, codebook_size, dim // groups]  EMA of the per-code sums
    cluster_size [groups, num_quantizers, codebook_size]                 EMA of the per-code counts
    initted      []  bool                                                k-means has run (always True without it)

``STATE_AXES`` gives the logical axis names (``state_shardings`` maps them through a rules table). Randomness comes
from one key per call: ``codebook_keys`` splits it into a (k-means, dead-code) pair per codebook, so a run is
deterministic given its keys.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sovits2_jax.models.config_base import ConfigBase

_HIGHEST = jax.lax.Precision.HIGHEST  # codebook sums and distances stay fp32 on accelerators


@dataclasses.dataclass(frozen=True)
class GRVQConfig(ConfigBase):
    """GroupedResidualVQ settings (defaults: GPT-SoVITS's VQ hyper-parameters on 768-d HuBERT features, 2 groups
    of one quantizer = 2 codebooks)."""

    dim: int = 768
    groups: int = 2
    num_quantizers: int = 1
    codebook_size: int = 1024
    decay: float = 0.99
    eps: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    reset_cluster_size: float | None = None  # None: threshold_ema_dead_code (vector-quantize-pytorch's default)
    commitment_weight: float = 1.0

    def __post_init__(self):
        problems = []
        for key in ("dim", "groups", "num_quantizers", "codebook_size"):
            if getattr(self, key) <= 0:
                problems.append(f"{key}={getattr(self, key)} must be positive")
        if self.groups > 0 and self.dim % self.groups:
            problems.append(f"groups={self.groups} does not divide dim={self.dim}")
        if not 0.0 <= self.decay < 1.0:
            problems.append(f"decay={self.decay} must be in [0, 1)")
        if self.kmeans_init and self.kmeans_iters < 1:
            problems.append(f"kmeans_iters={self.kmeans_iters} must be >= 1 with kmeans_init")
        if problems:
            raise ValueError("GRVQConfig: " + "; ".join(problems))

    @property
    def group_dim(self) -> int:
        return self.dim // self.groups

    @property
    def reset_size(self) -> float:
        return self.threshold_ema_dead_code if self.reset_cluster_size is None else self.reset_cluster_size

    @property
    def num_codebooks(self) -> int:
        return self.groups * self.num_quantizers


def two_codebooks(**overrides) -> GRVQConfig:
    """2 codebooks: 2 groups of 384 dims, one quantizer each."""
    return GRVQConfig(**{"groups": 2, "num_quantizers": 1, **overrides})


def four_codebooks(**overrides) -> GRVQConfig:
    """4 codebooks: 2 groups of 384 dims, two residual quantizers each."""
    return GRVQConfig(**{"groups": 2, "num_quantizers": 2, **overrides})


PRESETS = {"grvq2": two_codebooks, "grvq4": four_codebooks}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GRVQState:
    """Codebooks and their EMA buffers (layout in the module docstring)."""

    embed: jax.Array
    embed_avg: jax.Array
    cluster_size: jax.Array
    initted: jax.Array


STATE_AXES = GRVQState(
    embed=("vq_groups", "vq_layers", "codebook", "embed"),
    embed_avg=("vq_groups", "vq_layers", "codebook", "embed"),
    cluster_size=("vq_groups", "vq_layers", "codebook"),
    initted=(),
)


class GRVQOutput(NamedTuple):
    quantized: jax.Array  # [B, N, dim], straight-through; zero on padded frames
    codes: jax.Array  # [groups, B, N, num_quantizers] int32; -1 on padded frames
    commit_loss: jax.Array  # [groups, num_quantizers], already scaled by commitment_weight
    state: GRVQState


def init_state(config: GRVQConfig, key: jax.Array | None = None) -> GRVQState:
    """Zero codebooks awaiting k-means (``kmeans_init``), else kaiming-uniform ones (vector-quantize-pytorch's
    ``uniform_init``, which needs ``key``); cluster sizes 1 and ``embed_avg = embed``."""
    shape = (config.groups, config.num_quantizers, config.codebook_size, config.group_dim)
    if config.kmeans_init:
        embed = jnp.zeros(shape, jnp.float32)
    else:
        if key is None:
            raise ValueError("init_state: a key is needed for random codebooks (kmeans_init=False)")
        bound = float(np.sqrt(6.0 / (config.codebook_size * config.group_dim)))
        embed = jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    return GRVQState(
        embed=embed,
        embed_avg=jnp.copy(embed),  # a buffer of its own: a trainer donates the state
        cluster_size=jnp.ones(shape[:3], jnp.float32),
        initted=jnp.asarray(not config.kmeans_init),
    )


def state_shardings(config: GRVQConfig, mesh, rules) -> GRVQState:
    """NamedShardings of the state from ``STATE_AXES`` and a logical-axis rules table."""
    from jax.sharding import NamedSharding

    from sovits2_jax.parallel.sharding import logical_to_spec

    shapes = jax.eval_shape(lambda: init_state(config, jax.random.key(0)))
    return jax.tree.map(
        lambda axes, s: NamedSharding(mesh, logical_to_spec(axes, rules, s.shape, mesh)),
        STATE_AXES,
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def codebook_keys(key: jax.Array, config: GRVQConfig) -> jax.Array:
    """[groups, num_quantizers, 2] keys: index 0 draws the k-means start rows, index 1 the dead-code replacements."""
    return jax.random.split(key, (config.groups, config.num_quantizers, 2))


def shuffled_valid_rows(key: jax.Array, valid: jax.Array) -> jax.Array:
    """A random order of the row indices with every valid row before every invalid one."""
    return jnp.argsort(jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0))


def sample_rows(key: jax.Array, valid: jax.Array, num: int) -> jax.Array:
    """``num`` row indices among the valid rows: distinct when there are enough, else drawn with replacement."""
    k_order, k_any = jax.random.split(key)
    order = shuffled_valid_rows(k_order, valid)
    n_valid = jnp.sum(valid)
    distinct = order[jnp.arange(num) % valid.shape[0]]
    repeated = order[jax.random.randint(k_any, (num,), 0, jnp.maximum(n_valid, 1))]
    return jnp.where(n_valid >= num, distinct, repeated)


def nearest_code(x: jax.Array, embed: jax.Array) -> jax.Array:
    """Index of the nearest code [M] for x [M, d] and embed [C, d] (squared distances as vector-quantize-pytorch
    forms them, clamped at 1e-8: ties go to the lowest index)."""
    x2 = jnp.sum(x * x, axis=-1)
    e2 = jnp.sum(embed * embed, axis=-1)
    xe = jnp.einsum("md,cd->mc", x, embed, precision=_HIGHEST)
    d2 = (x2[:, None] + e2[None, :]) + xe * -2.0
    return jnp.argmin(jnp.maximum(d2, 1e-8), axis=-1).astype(jnp.int32)


def _counts_and_sums(x: jax.Array, codes: jax.Array, weight: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    onehot = jax.nn.one_hot(codes, size, dtype=x.dtype) * weight[:, None]
    return jnp.sum(onehot, axis=0), jnp.einsum("mc,md->cd", onehot, x, precision=_HIGHEST)


def kmeans(samples: jax.Array, valid: jax.Array, init_means: jax.Array, num_iters: int) -> tuple[jax.Array, jax.Array]:
    """Lloyd's iterations over the valid rows of samples [M, d] from init_means [C, d]: (means, counts of the last
    assignment); a cluster left empty keeps its centre."""
    weight = valid.astype(samples.dtype)
    size = init_means.shape[0]

    def step(_, carry):
        means, _ = carry
        bins, sums = _counts_and_sums(samples, nearest_code(samples, means), weight, size)
        new = sums / jnp.where(bins == 0, 1.0, bins)[:, None]
        return jnp.where((bins == 0)[:, None], means, new), bins

    return jax.lax.fori_loop(0, num_iters, step, (init_means, jnp.zeros((size,), samples.dtype)))


def normalized_codebook(embed_avg: jax.Array, cluster_size: jax.Array, eps: float) -> jax.Array:
    """``embed_avg`` divided by the Laplace-smoothed cluster sizes (which keep their total)."""
    total = jnp.sum(cluster_size, axis=-1, keepdims=True)
    smoothed = (cluster_size + eps) / (total + cluster_size.shape[-1] * eps) * total
    return embed_avg / smoothed[..., None]


def _lerp(old: jax.Array, new: jax.Array, weight: float) -> jax.Array:
    # torch.lerp's two forms (the EMA update is ``old.lerp_(new, 1 - decay)``)
    return old + weight * (new - old) if weight < 0.5 else new - (new - old) * (1.0 - weight)


def expire_codes(key, samples, valid, embed, embed_avg, cluster_size, config: GRVQConfig):
    """Replaces the dead codes of one codebook by distinct random valid rows of ``samples``; returns the new
    (embed, embed_avg, cluster_size). With more dead codes than valid rows, a random subset is replaced now and
    the rest stay dead until a later step. The j-th replaced code (in index order) takes row
    ``shuffled_valid_rows(jax.random.split(key)[1], valid)[j]``."""
    k_subset, k_rows = jax.random.split(key)
    dead = cluster_size < config.threshold_ema_dead_code
    n_valid = jnp.sum(valid)
    rank = jnp.argsort(jnp.argsort(jnp.where(dead, jax.random.uniform(k_subset, dead.shape), 2.0)))
    replace = dead & (rank < n_valid)
    slot = jnp.clip(jnp.cumsum(replace) - 1, 0, samples.shape[0] - 1)
    rows = samples[shuffled_valid_rows(k_rows, valid)[slot]]
    reset = jnp.asarray(config.reset_size, embed.dtype)
    embed = jnp.where(replace[:, None], rows, embed)
    embed_avg = jnp.where(replace[:, None], rows * reset, embed_avg)
    cluster_size = jnp.where(replace, reset, cluster_size)
    return embed, embed_avg, cluster_size


def _init_codebook(key, samples, valid, config: GRVQConfig):
    start = samples[sample_rows(key, valid, config.codebook_size)]
    means, bins = kmeans(samples, valid, start, config.kmeans_iters)
    embed_avg = means * bins[:, None]
    return normalized_codebook(embed_avg, bins, config.eps), embed_avg, bins


def _residual_stages(config: GRVQConfig, training: bool, initted, x, valid, embed, embed_avg, cluster_size, keys):
    """One group: x [M, d] through its ``num_quantizers`` stages (codebook arrays [Q, C, d], keys [Q, 2])."""
    weight = valid.astype(x.dtype)
    n_valid = jnp.maximum(jnp.sum(weight), 1.0)
    residual, out = x, jnp.zeros_like(x)
    codes_all, losses, new_state = [], [], ([], [], [])
    for q in range(config.num_quantizers):
        book = (embed[q], embed_avg[q], cluster_size[q])
        if config.kmeans_init:
            book = jax.lax.cond(
                initted,
                lambda b, r, k: b,
                lambda b, r, k: _init_codebook(k, r, valid, config),
                book,
                residual,
                keys[q, 0],
            )
        e, avg, size = book
        codes = nearest_code(residual, e)
        chosen = e[codes]
        if training:
            counts, sums = _counts_and_sums(residual, codes, weight, config.codebook_size)
            size = _lerp(size, counts, 1.0 - config.decay)
            avg = _lerp(avg, sums, 1.0 - config.decay)
            e = normalized_codebook(avg, size, config.eps)
            if config.threshold_ema_dead_code > 0:
                e, avg, size = expire_codes(keys[q, 1], residual, valid, e, avg, size, config)
        sq = jnp.square(jax.lax.stop_gradient(chosen) - residual) * weight[:, None]
        losses.append(jnp.sum(sq) / (n_valid * x.shape[-1]) * config.commitment_weight)
        through = residual + jax.lax.stop_gradient(chosen - residual) if training else chosen
        through = jnp.where(valid[:, None], through, 0.0)
        residual = residual - jax.lax.stop_gradient(through)
        out = out + through
        codes_all.append(jnp.where(valid, codes, -1))
        for buf, value in zip(new_state, (e, avg, size)):
            buf.append(value)
    stacked = tuple(jnp.stack(b) for b in new_state)
    return out, jnp.stack(codes_all, axis=-1), jnp.stack(losses), stacked


def quantize(
    state: GRVQState,
    x: jax.Array,
    key: jax.Array | None = None,
    *,
    config: GRVQConfig,
    mask: jax.Array | None = None,
    training: bool = False,
) -> GRVQOutput:
    """Quantises x [B, N, dim] (``mask`` [B, N] True on real frames). ``training`` (static) updates the EMA buffers
    and replaces dead codes; k-means runs in any mode while ``state.initted`` is False. ``key`` feeds k-means and
    dead-code replacement (default: key 0). Jittable with ``config`` and ``training`` static."""
    b, n, dim = x.shape
    if dim != config.dim:
        raise ValueError(f"quantize: input has {dim} features, config.dim={config.dim}")
    g, d = config.groups, config.group_dim
    xg = jnp.transpose(x.astype(jnp.float32).reshape(b * n, g, d), (1, 0, 2))
    valid = jnp.ones((b * n,), bool) if mask is None else jnp.asarray(mask, bool).reshape(b * n)
    keys = codebook_keys(jax.random.key(0) if key is None else key, config)
    stages = jax.vmap(lambda xs, e, a, s, k: _residual_stages(config, training, state.initted, xs, valid, e, a, s, k))
    out, codes, losses, (embed, embed_avg, cluster_size) = stages(
        xg, state.embed, state.embed_avg, state.cluster_size, keys
    )
    quantized = jnp.transpose(out, (1, 0, 2)).reshape(b, n, dim).astype(x.dtype)
    codes = codes.reshape(g, b, n, config.num_quantizers)
    new_state = GRVQState(embed, embed_avg, cluster_size, jnp.ones_like(state.initted))
    return GRVQOutput(quantized, codes, losses, new_state)


def decode(state: GRVQState, codes: jax.Array) -> jax.Array:
    """codes [groups, B, N, Q'] (Q' <= num_quantizers; -1 = none) -> [B, N, dim]: per group the sum of its stages'
    codes, groups concatenated (``get_output_from_indices``)."""
    _, b, n, q = codes.shape
    total = 0.0
    for i in range(q):
        idx = codes[..., i]
        books = state.embed[:, i]  # [G, C, d]
        picked = jax.vmap(lambda book, c: book[jnp.maximum(c, 0)])(books, idx)  # [G, B, N, d]
        total = total + jnp.where((idx >= 0)[..., None], picked, 0.0)
    return jnp.transpose(total, (1, 2, 0, 3)).reshape(b, n, -1)


# ------------------------------------------------------------------------------------------------ layouts


def state_to_dict(state: GRVQState) -> dict[str, jax.Array]:
    """The state as a plain dict (``embed``, ``embed_avg``, ``cluster_size``, ``initted``): how trainers and
    checkpoints carry it."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(GRVQState)}


def state_from_dict(values) -> GRVQState:
    """``state_to_dict`` back (a mapping with exactly the four fields)."""
    names = {f.name for f in dataclasses.fields(GRVQState)}
    if set(values) != names:
        raise ValueError(f"a GRVQ state has the fields {sorted(names)}, got {sorted(values)}")
    return GRVQState(**{k: values[k] for k in names})


def codes_to_rows(codes: jax.Array) -> jax.Array:
    """codes [groups, B, N, Q] -> [groups * Q, B, N]; row ``g * Q + q`` is group g's stage q."""
    g, b, n, q = codes.shape
    return jnp.transpose(codes, (0, 3, 1, 2)).reshape(g * q, b, n)


def rows_to_codes(rows: jax.Array, config: GRVQConfig) -> jax.Array:
    """``codes_to_rows`` back: [groups * Q', B, N] -> [groups, B, N, Q'] (Q' <= num_quantizers: the first stages)."""
    k, b, n = rows.shape
    if k % config.groups or k // config.groups > config.num_quantizers:
        raise ValueError(
            f"codes have {k} rows; expected groups ({config.groups}) x up to {config.num_quantizers} quantizers"
        )
    return jnp.transpose(rows.reshape(config.groups, k // config.groups, b, n), (0, 2, 3, 1))


# ------------------------------------------------------------------------------------------------ usage


def perplexity(codes: jax.Array, codebook_size: int) -> jax.Array:
    """Jittable: the perplexity of each codebook's code distribution in one batch, codes [groups, B, N, Q] (-1 left
    out) -> [groups, Q] (``code_usage``'s figure, for a training metric)."""
    onehot = jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32)  # -1 gives a zero row
    counts = jnp.sum(onehot, axis=(1, 2))  # [G, Q, C]
    p = counts / jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1))


def code_counts(rows, codebook_size: int) -> np.ndarray:
    """How often each code occurs per codebook: rows [K, ...] int (-1 = padding, left out) -> [K, codebook_size]
    int64 (sum the counts of several batches to measure a corpus)."""
    rows = np.asarray(rows).reshape(np.shape(rows)[0], -1)
    out = np.zeros((rows.shape[0], codebook_size), np.int64)
    for k, r in enumerate(rows):
        r = r[r >= 0]
        out[k] = np.bincount(r, minlength=codebook_size)[:codebook_size]
    return out


def code_usage(counts) -> list[dict[str, float]]:
    """Per codebook (a row of ``code_counts``): ``used`` (codes seen at least once), ``usage`` (their fraction of
    the codebook) and ``perplexity`` (exp of the entropy of the code distribution: the number of equally used
    codes that would give the same entropy; the codebook size when use is uniform, 1 when one code takes all)."""
    out = []
    for row in np.asarray(counts, np.float64):
        total = row.sum()
        p = row[row > 0] / total if total > 0 else np.zeros(0)
        entropy = float(-(p * np.log(p)).sum()) if p.size else 0.0
        used = int((row > 0).sum())
        out.append({"used": float(used), "usage": used / len(row), "perplexity": float(np.exp(entropy))})
    return out
