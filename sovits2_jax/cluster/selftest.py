"""Multi-process smoke test: join the job, build the mesh from the config, create sharded params, run one
forward+backward step on a global batch fed per process, print the loss and gradient norm (same on every process).

    launch/local.sh -n 2 -- .venv/bin/python -m sovits2_jax.cluster.selftest --config=configs/qwen2.py:tiny
"""

from __future__ import annotations

import json

from absl import flags

from sovits2_jax import cli
from sovits2_jax.train.validate import validate

_CONFIG = cli.config_flag("configs/qwen2.py:tiny")
_SEQ = flags.DEFINE_integer("seq_len", 32, "sequence length of the test batch")


def global_batch(batch: int, seq_len: int, vocab: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, (batch, seq_len + 1))


def step_result(config, seq_len: int) -> dict:
    """Loss and gradient norm of one step on the mesh described by the (validated) ``config``, whatever the
    process layout."""
    import jax
    import optax
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
    from sovits2_jax.parallel.mesh import make_mesh
    from sovits2_jax.parallel.sharding import activation_rules, sharded_init

    model_config = Qwen2Config.from_dict(config.model.to_dict())
    mesh = make_mesh(dict(config.mesh))
    rules = config.sharding.rules
    graphdef, params, shardings = sharded_init(
        lambda: Qwen2ForCausalLM(model_config, rngs=nnx.Rngs(config.seed)), mesh, rules
    )
    ids = global_batch(config.train.batch_size, seq_len, model_config.vocab_size)
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    per_process = config.train.batch_size // jax.process_count()
    local = ids[jax.process_index() * per_process : (jax.process_index() + 1) * per_process]
    batch = jax.make_array_from_process_local_data(batch_sharding, local, ids.shape)

    def loss_and_grad_norm(params, ids):
        def loss_fn(p):
            logits, _ = nnx.merge(graphdef, p)(ids[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return loss, optax.global_norm(grads)

    replicated = NamedSharding(mesh, PartitionSpec())
    with jax.set_mesh(mesh), activation_rules(rules):
        fn = jax.jit(loss_and_grad_norm, in_shardings=(shardings, batch_sharding), out_shardings=replicated)
        loss, norm = fn(params, batch)
    return dict(loss=float(loss), grad_norm=float(norm), mesh=dict(mesh.shape))


def main(argv) -> int:
    del argv
    import jax

    from sovits2_jax.parallel.distributed import initialize

    initialize()
    result = step_result(cli.validated(_CONFIG, validate), _SEQ.value)
    result.update(process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count())
    print("SELFTEST " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
