"""XLM-RoBERTa encoder (HF ``XLMRobertaModel`` semantics) in Flax NNX: GPT-SoVITS2's text encoder, BGE-M3.

Embeddings (word + absolute position + token type, then LayerNorm) feed post-LayerNorm encoder layers
(bidirectional multi-head attention with biases, GELU feed-forward). Positions follow fairseq: real tokens count
from ``pad_token_id + 1`` and padding tokens sit at ``pad_token_id``, so a row's features do not depend on how much
padding follows it. ``encode`` runs a list of id sequences through the jitted encoder in length buckets.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.models.config_base import ConfigBase
from sovits2_jax.nn import attention as attn
from sovits2_jax.nn.layers import Embed, LayerNorm, Linear
from sovits2_jax.parallel.sharding import constrain
from sovits2_jax.validation import check

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}
DTYPES = ("float32", "bfloat16", "float16")
BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig(ConfigBase):
    """Architecture of an XLM-RoBERTa encoder (defaults: BAAI/bge-m3)."""

    vocab_size: int = 250002
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    max_position_embeddings: int = 8194
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    hidden_act: str = "gelu"
    with_pooler: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str | None = None

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_tokens(self) -> int:
        """The longest row (special tokens included) the position table covers."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> XLMRobertaConfig:
        """From a HF ``config.json`` dict (model_type xlm-roberta); unsupported variants are a ValueError."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise ValueError("decoder XLM-RoBERTa variants (is_decoder / add_cross_attention) are not supported")
        values = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            pad_token_id=hf.get("pad_token_id", 1),
            hidden_act=hf.get("hidden_act", "gelu"),
        )
        values.update(overrides)
        config = cls(**values)
        validate(config)
        return config

    def to_hf(self) -> dict[str, Any]:
        """A HF ``config.json`` dict that ``transformers.XLMRobertaConfig`` accepts."""
        return dict(
            architectures=["XLMRobertaModel"],
            model_type="xlm-roberta",
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
            bos_token_id=0,
            eos_token_id=2,
            hidden_act=self.hidden_act,
            position_embedding_type="absolute",
        )


def bge_m3(**overrides) -> XLMRobertaConfig:
    """BAAI/bge-m3: 24 layers, hidden 1024, 16 heads, FFN 4096, 8194 positions, 250002 ids."""
    return XLMRobertaConfig(**overrides)


def small(**overrides) -> XLMRobertaConfig:
    """A small encoder for benchmarks on a CPU (4 layers, hidden 256)."""
    values = dict(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4)
    return XLMRobertaConfig(**{**values, **overrides})


def tiny(**overrides) -> XLMRobertaConfig:
    """A tiny encoder for tests (2 layers, hidden 32, 514 positions)."""
    values = dict(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, max_position_embeddings=514
    )
    return XLMRobertaConfig(**{**values, **overrides})


def validate(m, prefix: str = "config.model") -> None:
    """Checks an XLM-RoBERTa config or section (dims, heads, activation, dtypes); ConfigError names the key."""
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "type_vocab_size"):
        check(int(getattr(m, key)) > 0, f"{prefix}.{key}={getattr(m, key)} must be positive")
    check(
        m.hidden_size % m.num_heads == 0,
        f"{prefix}.num_heads={m.num_heads} does not divide {prefix}.hidden_size={m.hidden_size}",
    )
    check(
        0 <= m.pad_token_id < m.max_position_embeddings - 1,
        f"{prefix}.pad_token_id={m.pad_token_id} leaves no positions in "
        f"{prefix}.max_position_embeddings={m.max_position_embeddings}",
    )
    check(m.hidden_act in ACTIVATIONS, f"{prefix}.hidden_act={m.hidden_act!r} not in {sorted(ACTIVATIONS)}")
    check(
        m.attention_impl in attn.IMPLEMENTATIONS,
        f"{prefix}.attention_impl={m.attention_impl!r} not in {attn.IMPLEMENTATIONS}",
    )
    for key in ("dtype", "param_dtype"):
        check(getattr(m, key) in DTYPES, f"{prefix}.{key}={getattr(m, key)!r} not in {DTYPES}")


def position_ids(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """fairseq positions: the n-th real token of a row (n = 1, 2, ...) is at ``pad_token_id + n``, a pad at
    ``pad_token_id``; counted over ``input_ids != pad_token_id`` as HF does, whatever the attention mask says."""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + pad_token_id


def _kw(config: XLMRobertaConfig, rngs: nnx.Rngs) -> dict:
    return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)


def _layer_norm(config: XLMRobertaConfig) -> LayerNorm:
    return LayerNorm(config.hidden_size, eps=config.layer_norm_eps, param_dtype=jnp.dtype(config.param_dtype))


class Embeddings(nnx.Module):
    """word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, config: XLMRobertaConfig, *, rngs: nnx.Rngs):
        kw = _kw(config, rngs)
        self.pad_token_id = config.pad_token_id
        self.word = Embed(config.vocab_size, config.hidden_size, **kw)
        self.position = Embed(config.max_position_embeddings, config.hidden_size, axes=(None, "embed"), **kw)
        self.token_type = Embed(config.type_vocab_size, config.hidden_size, axes=(None, "embed"), **kw)
        self.norm = _layer_norm(config)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None = None) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.word(input_ids) + self.token_type(token_type_ids)
        x = x + self.position(position_ids(input_ids, self.pad_token_id))
        return self.norm(x)


class SelfAttention(nnx.Module):
    """Bidirectional multi-head attention with biased q/k/v/output projections."""

    def __init__(self, config: XLMRobertaConfig, *, rngs: nnx.Rngs):
        d, kw = config.hidden_size, _kw(config, rngs)
        self.query = Linear(d, d, axes=("embed", "heads"), **kw)
        self.key = Linear(d, d, axes=("embed", "heads"), **kw)
        self.value = Linear(d, d, axes=("embed", "heads"), **kw)
        self.output = Linear(d, d, axes=("heads", "embed"), **kw)
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.implementation = config.attention_impl

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        q, k, v = (proj(x).reshape(b, t, self.num_heads, self.head_size) for proj in (self.query, self.key, self.value))
        q = constrain(q, ("batch", "length", "act_heads", None))
        out = attn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
        return self.output(out.reshape(b, t, -1))


class FeedForward(nnx.Module):
    def __init__(self, config: XLMRobertaConfig, *, rngs: nnx.Rngs):
        kw = _kw(config, rngs)
        self.up = Linear(config.hidden_size, config.intermediate_size, axes=("embed", "mlp"), **kw)
        self.down = Linear(config.intermediate_size, config.hidden_size, axes=("mlp", "embed"), **kw)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.activation(self.up(x))
        return self.down(constrain(h, ("batch", "length", "act_mlp")))


class EncoderLayer(nnx.Module):
    """Post-LayerNorm block: x = norm(x + attention(x)); x = norm(x + ffn(x))."""

    def __init__(self, config: XLMRobertaConfig, *, rngs: nnx.Rngs):
        self.attention = SelfAttention(config, rngs=rngs)
        self.attention_norm = _layer_norm(config)
        self.mlp = FeedForward(config, rngs=rngs)
        self.mlp_norm = _layer_norm(config)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.attention_norm(x + self.attention(x, mask))
        x = self.mlp_norm(x + self.mlp(x))
        return constrain(x, ("batch", "length", "act_embed"))


class XLMRobertaModel(nnx.Module):
    """Embeddings + encoder layers (+ the pooler when ``config.with_pooler``). ``__call__`` returns the last hidden
    state [B, T, H] (sentence-transformers' ``token_embeddings``); ``pool`` gives HF's ``pooler_output``."""

    def __init__(self, config: XLMRobertaConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.pooler = (
            Linear(config.hidden_size, config.hidden_size, axes=("embed", "mlp"), **_kw(config, rngs))
            if config.with_pooler
            else None
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """input_ids [B, T]; attention_mask [B, T] True for real tokens (default: ids != pad); token_type_ids
        [B, T] (default: 0). Returns hidden [B, T, H]; rows at padded positions are not meaningful."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        mask = attention_mask.astype(bool)[:, None, None, :]
        x = constrain(self.embeddings(input_ids, token_type_ids), ("batch", "length", "act_embed"))
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def pool(self, hidden: jax.Array) -> jax.Array:
        """tanh(dense(hidden of the first token)) [B, H]; needs ``config.with_pooler``."""
        if self.pooler is None:
            raise ValueError("this XLM-RoBERTa has no pooler (config.with_pooler=False)")
        return jnp.tanh(self.pooler(hidden[:, 0]))


# ----------------------------------------------------------------------------------------------- batched encoding
def bucket_length(length: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket that holds ``length`` tokens; a ValueError beyond the largest."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f"a row of {length} tokens is longer than the largest bucket ({max(buckets)})")


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, params: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params)(ids, mask)


def encode(
    model: XLMRobertaModel,
    rows: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    buckets: Sequence[int] = BUCKETS,
) -> list[np.ndarray]:
    """Last hidden state of each id row (with its <s> ... </s>), one float32 [len(row), H] array per row.

    Rows are grouped by bucket length, right-padded with the pad id to it, and run ``batch_size`` at a time
    (a short last batch is filled with empty rows), so only (batch_size, bucket) shapes compile.
    """
    config = model.config
    limit = min(config.max_tokens, max(buckets))
    for n, row in enumerate(rows):
        if not 0 < len(row) <= limit:
            raise ValueError(f"row {n} has {len(row)} tokens; 1 to {limit} fit the model and buckets")
        if min(row) < 0 or max(row) >= config.vocab_size:  # a tokenizer of another model: ids would be clipped
            raise ValueError(f"row {n} has ids outside the model's vocabulary of {config.vocab_size}")
    graphdef, params = nnx.split(model)
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    by_bucket: dict[int, list[int]] = {}
    for n, row in enumerate(rows):
        by_bucket.setdefault(bucket_length(len(row), buckets), []).append(n)
    for length, members in sorted(by_bucket.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            ids = np.full((batch_size, length), config.pad_token_id, np.int32)
            lengths = np.zeros((batch_size, 1), np.int32)
            for r, n in enumerate(chunk):
                ids[r, : len(rows[n])] = rows[n]
                lengths[r] = len(rows[n])
            mask = np.arange(length)[None, :] < lengths
            hidden = np.asarray(_forward(graphdef, params, ids, mask), np.float32)
            for r, n in enumerate(chunk):
                out[n] = hidden[r, : len(rows[n])]
    return out
