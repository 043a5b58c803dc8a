"""Mesh + logical-axis sharding on 8 simulated CPU devices: results equal one device, parameters really split."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from sovits2_jax.convert.params import params_from_flat, params_to_flat
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.parallel.mesh import make_mesh, resolve_mesh_shape
from sovits2_jax.parallel.rules import SHARDING_RULES
from sovits2_jax.parallel.sharding import activation_rules, logical_to_spec, sharded_init

CONFIG = Qwen2Config(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    tie_word_embeddings=False,
)


def make_model():
    return Qwen2ForCausalLM(CONFIG, rngs=nnx.Rngs(7))


def loss_fn(params, graphdef, ids):
    logits, _ = nnx.merge(graphdef, params)(ids[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean(), logits


def forward_and_grad(graphdef, params, ids):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, graphdef, ids)
    return loss, logits, grads


def test_device_count():
    assert jax.device_count() == 8, "conftest should provide 8 simulated CPU devices"


@pytest.mark.parametrize(
    "axes,expected",
    [
        # parameter path -> per-device shard shape on that mesh
        ((8, 1, 1), {"model.embed_tokens.embedding": (512, 64), "model.layers.0.mlp.gate.kernel": (64, 128)}),
        ((2, 4, 1), {"model.embed_tokens.embedding": (512, 16), "model.layers.0.mlp.gate.kernel": (16, 128)}),
        (
            (2, 2, 2),
            {
                "model.embed_tokens.embedding": (256, 32),
                "model.layers.0.mlp.gate.kernel": (32, 64),
                "model.layers.0.mlp.down.kernel": (64, 32),
                "model.layers.0.attention.key.kernel": (32, 16),
                "lm_head.kernel": (32, 256),
            },
        ),
    ],
)
def test_sharded_equals_single_device(axes, expected):
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), axes)))
    graphdef, params, shardings = sharded_init(make_model, mesh, SHARDING_RULES)

    # Parameters are created split across devices, not replicated then sliced.
    flat_params = dict(nnx.to_flat_state(params))
    for path, shard_shape in expected.items():
        key = tuple(int(p) if p.isdigit() else p for p in path.split("."))
        value = flat_params[key][...]
        assert value.sharding.shard_shape(value.shape) == shard_shape, path
        assert {s.data.shape for s in value.addressable_shards} == {shard_shape}, path

    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (8, 33))
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh), activation_rules(SHARDING_RULES):
        replicated = NamedSharding(mesh, PartitionSpec())
        step = jax.jit(
            forward_and_grad,
            static_argnums=0,
            in_shardings=(shardings, batch_sharding),
            out_shardings=(replicated, batch_sharding, shardings),
        )
        loss, logits, grads = step(graphdef, params, jax.device_put(ids, batch_sharding))
        assert grads["lm_head"]["kernel"][...].sharding.spec == shardings["lm_head"]["kernel"].spec

    # The same values on one device.
    single = params_to_flat(params)
    with jax.default_device(jax.devices()[0]):
        graphdef1, params1 = params_from_flat(make_model, single)
        loss1, logits1, grads1 = jax.jit(forward_and_grad, static_argnums=0)(graphdef1, params1, ids)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(logits1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(loss), float(loss1), atol=1e-5, rtol=0)
    g, g1 = params_to_flat(grads), params_to_flat(grads1)
    assert set(g) == set(g1)
    for k in g:
        np.testing.assert_allclose(g[k], g1[k], atol=1e-5, rtol=0, err_msg=k)
    assert max(np.abs(v).max() for v in g1.values()) > 1e-3  # gradients are not trivially zero


def test_rules_first_fitting_rule_wins():
    mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
    rules = (("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("batch", ("data", "fsdp")))
    assert logical_to_spec(("embed", "mlp"), rules, (64, 128), mesh) == PartitionSpec("fsdp", "tensor")
    # tensor is taken by mlp: heads falls back to replicated rather than reusing a mesh axis.
    assert logical_to_spec(("mlp", "heads"), rules, (64, 64), mesh) == PartitionSpec("tensor", None)
    # a dimension the mesh axes do not divide is replicated.
    assert logical_to_spec(("embed",), rules, (3,), mesh) == PartitionSpec(None)
    assert logical_to_spec(("batch", "unknown"), rules, (8, 5), mesh) == PartitionSpec(("data", "fsdp"), None)


def test_mesh_shape_fill_and_errors():
    assert resolve_mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    with pytest.raises(ValueError, match=r"mesh\.pipeline"):
        resolve_mesh_shape(dict(pipeline=2), 8)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_mesh_shape(dict(data=-1, fsdp=3), 8)


def test_constrain_is_noop_without_mesh():
    from sovits2_jax.parallel.sharding import constrain

    x = jnp.ones((4, 8))
    assert constrain(x, ("batch", "act_embed")) is x


class _TwoConvs(nnx.Module):
    def __init__(self, rngs):
        from sovits2_jax.nn.layers import Conv1d

        self.first = Conv1d(64, 64, 3, padding=1, rngs=rngs)
        self.second = Conv1d(64, 64, 3, padding=1, rngs=rngs)

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


def test_chained_conv_gradients_on_3d_mesh():
    """Regression: kernels with in-channels on fsdp gave ~60% wrong first-conv gradients on (2,2,2)."""
    mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
    graphdef, params, shardings = sharded_init(lambda: _TwoConvs(nnx.Rngs(0)), mesh, SHARDING_RULES)
    x = np.random.default_rng(0).normal(size=(8, 20, 64)).astype(np.float32)

    def loss(p, x):
        return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh), activation_rules(SHARDING_RULES):
        grads = jax.jit(jax.grad(loss), in_shardings=(shardings, batch_sharding), out_shardings=shardings)(
            params, jax.device_put(x, batch_sharding)
        )
    single = jax.grad(loss)(jax.device_put(params, jax.devices()[0]), x)
    g, g1 = params_to_flat(grads), params_to_flat(single)
    for k in g1:
        np.testing.assert_allclose(g[k], g1[k], atol=1e-5, rtol=0, err_msg=k)
