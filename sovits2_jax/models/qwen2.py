"""Qwen2 decoder-only transformer (HF ``Qwen2ForCausalLM`` semantics) in Flax NNX.

RMSNorm pre-norm blocks, rotate-half RoPE, grouped-query attention (q/k/v with bias, output without), SwiGLU MLP.
Layers are a Python list or, with ``scan_layers``, one stacked module run under ``lax.scan``; ``remat_policy``
wraps each layer in ``jax.checkpoint``. A fixed-size KV cache (``init_cache``) supports prefill + decode with
per-row write positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.config_base import ConfigBase
from sovits2_jax.nn import attention as attn
from sovits2_jax.nn.layers import Embed, Linear, RMSNorm
from sovits2_jax.nn.rope import apply_rope, rope_cos_sin
from sovits2_jax.parallel.sharding import constrain
from sovits2_jax.validation import check

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class Qwen2Config(ConfigBase):
    """Architecture and execution switches of a Qwen2 decoder (defaults: Qwen2-0.5B)."""

    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: int | None = None
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str | None = None
    remat_policy: str = "none"
    scan_layers: bool = False

    def __post_init__(self):
        if not self.head_dim:  # configs write 0 for "hidden_size // num_heads"
            object.__setattr__(self, "head_dim", None)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> Qwen2Config:
        """From a HF ``config.json`` dict (model_type qwen2)."""
        rope_theta = hf.get("rope_theta")
        if rope_theta is None:
            rope_theta = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        values = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim"),
            rope_theta=float(rope_theta),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )
        values.update(overrides)
        return cls(**values)

    def to_hf(self) -> dict[str, Any]:
        """A HF ``config.json`` dict that ``transformers.Qwen2Config`` accepts."""
        return dict(
            architectures=["Qwen2ForCausalLM"],
            model_type="qwen2",
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_size,
            rope_theta=self.rope_theta,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            hidden_act="silu",
            torch_dtype=self.param_dtype,
        )


DTYPES = ("float32", "bfloat16", "float16")


def validate(m, prefix: str = "config.model") -> None:
    """Checks a Qwen2 model section (heads, dims, switches); ConfigError names the key."""
    for key in ("hidden_size", "num_heads", "num_kv_heads", "num_layers", "vocab_size", "intermediate_size"):
        check(int(m[key]) > 0, f"{prefix}.{key}={m[key]} must be positive")
    head_dim = m.get("head_dim") or 0
    if not head_dim:
        check(
            m.hidden_size % m.num_heads == 0,
            f"{prefix}.num_heads={m.num_heads} does not divide {prefix}.hidden_size={m.hidden_size}",
        )
        head_dim = m.hidden_size // m.num_heads
    check(head_dim % 2 == 0, f"{prefix}.head_dim={head_dim} must be even for rotary embeddings")
    check(
        m.num_heads % m.num_kv_heads == 0,
        f"{prefix}.num_kv_heads={m.num_kv_heads} does not divide {prefix}.num_heads={m.num_heads}",
    )
    check(
        m.remat_policy in REMAT_POLICIES,
        f"{prefix}.remat_policy={m.remat_policy!r} not in {sorted(REMAT_POLICIES)}",
    )
    check(
        m.get("attention_impl") in attn.IMPLEMENTATIONS,
        f"{prefix}.attention_impl={m.get('attention_impl')!r} not in {attn.IMPLEMENTATIONS}",
    )
    for key in ("dtype", "param_dtype"):
        check(m[key] in DTYPES, f"{prefix}.{key}={m[key]!r} not in {DTYPES}")
    check(m.rope_theta > 0, f"{prefix}.rope_theta={m.rope_theta} must be positive")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Keys/values [layers, batch, max_len, kv_heads, head_dim] and each row's next write position [batch]."""

    k: jax.Array
    v: jax.Array
    index: jax.Array


def init_cache(config: Qwen2Config, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_size)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


def _write_rows(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
    """Writes new [B, T, K, D] into cache [B, S, K, D] at each row's own start position."""
    return jax.vmap(lambda c, n, s: jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (s, 0, 0)))(cache, new, start)


class Attention(nnx.Module):
    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        d, h, k, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_size
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.query = Linear(d, h * hd, use_bias=config.attention_bias, axes=("embed", "heads"), **kw)
        self.key = Linear(d, k * hd, use_bias=config.attention_bias, axes=("embed", "kv_heads"), **kw)
        self.value = Linear(d, k * hd, use_bias=config.attention_bias, axes=("embed", "kv_heads"), **kw)
        self.output = Linear(h * hd, d, use_bias=False, axes=("heads", "embed"), **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, hd
        self.implementation = config.attention_impl

    def __call__(self, x, cos, sin, mask, kv=None, start=None):
        b, t, _ = x.shape
        q = self.query(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.key(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.value(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            k = _write_rows(kv[0], k, start)
            v = _write_rows(kv[1], v, start)
            kv = (k, v)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        q = constrain(q, ("batch", "length", "act_heads", None))
        out = attn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
        return self.output(out.reshape(b, t, -1)), kv


class MLP(nnx.Module):
    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(
            use_bias=False,
            dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs,
        )
        self.gate = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.up = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.down = Linear(f, d, axes=("mlp", "embed"), **kw)

    def __call__(self, x):
        h = jax.nn.silu(self.gate(x)) * self.up(x)
        return self.down(constrain(h, ("batch", "length", "act_mlp")))


class DecoderLayer(nnx.Module):
    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        pd = jnp.dtype(config.param_dtype)
        self.attention_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, param_dtype=pd, rngs=rngs)
        self.attention = Attention(config, rngs=rngs)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, param_dtype=pd, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x, cos, sin, mask, kv=None, start=None):
        h, kv = self.attention(self.attention_norm(x), cos, sin, mask, kv, start)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ("batch", "length", "act_embed")), kv


def _stacked_layers(config: Qwen2Config, rngs: nnx.Rngs) -> DecoderLayer:
    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return DecoderLayer(config, rngs=rngs)

    layers = create(rngs)
    for _, v in nnx.iter_graph(layers):
        if isinstance(v, nnx.Variable) and "logical_axes" in v.get_metadata():
            v.set_metadata("logical_axes", ("layers", *v.get_metadata()["logical_axes"]))
    return layers


def attention_mask_for(
    t: int,
    kv_len: int,
    start: jax.Array | None,
    attention_mask: jax.Array | None,
    segment_ids: jax.Array | None,
    bidirectional_segments: jax.Array | None = None,
) -> jax.Array:
    """Boolean [B or 1, 1, T, S] mask: causal (in absolute cache positions when ``start`` is given), key padding
    from ``attention_mask`` [B, T] and same-segment from ``segment_ids`` [B, T]. ``bidirectional_segments``
    [B, T] (0 = none) also lets the tokens of one non-zero segment of this call see each other both ways
    (prefix-LM style text blocks)."""
    if start is None:
        mask = attn.causal_mask(t)[None, None]
        if bidirectional_segments is not None:
            s = bidirectional_segments
            mask = mask | ((s[:, :, None] == s[:, None, :]) & (s[:, :, None] > 0))[:, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :].astype(bool)
        if segment_ids is not None:
            mask = mask & attn.segment_mask(segment_ids)
        return mask
    slots = jnp.arange(kv_len)
    query_pos = start[:, None] + jnp.arange(t)[None, :]
    mask = slots[None, None, :] <= query_pos[:, :, None]
    if bidirectional_segments is not None:
        s = bidirectional_segments
        rel = slots[None, :] - start[:, None]
        seg_k = jnp.where((rel >= 0) & (rel < t), jnp.take_along_axis(s, jnp.clip(rel, 0, t - 1), axis=1), 0)
        mask = mask | ((seg_k[:, None, :] == s[:, :, None]) & (s[:, :, None] > 0))
    if attention_mask is not None:
        rel = slots[None, :] - start[:, None]
        inside = (rel >= 0) & (rel < t)
        new_ok = jnp.take_along_axis(attention_mask.astype(bool), jnp.clip(rel, 0, t - 1), axis=1)
        mask = mask & ((rel < 0) | (inside & new_ok))[:, None, :]
    if segment_ids is not None:
        raise ValueError("segment_ids (packing) is a training feature and cannot be combined with a KV cache")
    return mask[:, None]


class Qwen2Model(nnx.Module):
    """Token embedding + decoder layers + final RMSNorm. ``__call__`` returns (hidden [B, T, D], cache)."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        self.config = config
        pd = jnp.dtype(config.param_dtype)
        self.embed_tokens = Embed(
            config.vocab_size, config.hidden_size, dtype=jnp.dtype(config.dtype), param_dtype=pd, rngs=rngs
        )
        if config.scan_layers:
            self.layers = _stacked_layers(config, rngs)
        else:
            self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, param_dtype=pd, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        positions: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        bidirectional_segments: jax.Array | None = None,
    ):
        """Runs the decoder.

        input_ids [B, T] or inputs_embeds [B, T, D]; positions [B, T] (default: 0..T-1, or the cache index onward);
        attention_mask [B, T] True for real tokens; segment_ids [B, T] for packed rows (0 = padding);
        bidirectional_segments [B, T] makes each non-zero segment of this call attend both ways within itself.
        Returns (hidden, cache) or, with ``return_hidden``, (hidden, cache, per-layer hidden states [L+1, B, T, D]
        as HF's ``output_hidden_states``: the embeddings, then each layer's output, the last one after the norm).
        """
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds.astype(jnp.dtype(cfg.dtype))
        b, t, _ = x.shape
        start = None if cache is None else cache.index
        if positions is None:
            positions = jnp.arange(t)[None, :] + (0 if start is None else start[:, None])
            positions = jnp.broadcast_to(positions, (b, t))
        cos, sin = rope_cos_sin(positions, cfg.head_size, cfg.rope_theta)
        kv_len = t if cache is None else cache.k.shape[2]
        mask = attention_mask_for(t, kv_len, start, attention_mask, segment_ids, bidirectional_segments)
        x = constrain(x, ("batch", "length", "act_embed"))

        policy = REMAT_POLICIES[cfg.remat_policy]

        def run_layer(layer_state, graphdef, h, kv):
            return nnx.merge(graphdef, layer_state)(h, cos, sin, mask, kv, start)

        if cfg.remat_policy != "none":
            run_layer = jax.checkpoint(run_layer, policy=policy, static_argnums=(1,))

        hidden_states = [x]
        if cfg.scan_layers:
            graphdef, states = nnx.split(self.layers)

            def body(h, layer_in):
                layer_state, kv = layer_in
                h, kv = run_layer(layer_state, graphdef, h, kv)
                return h, (kv, h)

            kv_in = None if cache is None else (cache.k, cache.v)
            x, (kv_out, per_layer) = jax.lax.scan(body, x, (states, kv_in))
            if return_hidden:
                hidden_states.extend(per_layer[i] for i in range(cfg.num_layers))
        else:
            ks, vs = [], []
            for i, layer in enumerate(self.layers):
                graphdef, state = nnx.split(layer)
                kv = None if cache is None else (cache.k[i], cache.v[i])
                x, kv = run_layer(state, graphdef, x, kv)
                hidden_states.append(x)
                if kv is not None:
                    ks.append(kv[0])
                    vs.append(kv[1])
            kv_out = None if cache is None else (jnp.stack(ks), jnp.stack(vs))
        x = self.final_norm(x)
        if cache is not None:
            cache = KVCache(kv_out[0], kv_out[1], cache.index + t)
        if return_hidden:
            hidden_states[-1] = x
            return x, cache, jnp.stack(hidden_states)
        return x, cache


class Qwen2ForCausalLM(nnx.Module):
    """Qwen2Model + LM head (tied to the embedding or a separate ``lm_head``). Returns (logits, cache[, hidden])."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.model = Qwen2Model(config, rngs=rngs)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(
                config.hidden_size,
                config.vocab_size,
                use_bias=False,
                axes=("embed", "vocab"),
                dtype=jnp.dtype(config.dtype),
                param_dtype=jnp.dtype(config.param_dtype),
                kernel_init=nnx.initializers.normal(0.02),
                rngs=rngs,
            )
        )

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.lm_head is None:
            return self.model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def __call__(self, input_ids=None, **kwargs):
        out = self.model(input_ids, **kwargs)
        logits = constrain(self.logits(out[0]), ("batch", "length", "act_vocab"))
        return (logits, *out[1:])
