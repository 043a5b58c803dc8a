"""Qwen2 forward+backward step time: ours (jitted) vs transformers (PyTorch) at the same config and batch.

python -m sovits2_jax.bench.qwen2 [--config=configs/qwen2.py:50m] [--batch=4] [--seq_len=256]
"""

from __future__ import annotations

from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import scratch_dir
from sovits2_jax.train.validate import validate

_CONFIG = cli.config_flag("configs/qwen2.py:50m", help="Qwen2 config file[:arg]")
_BATCH = flags.DEFINE_integer("batch", 4, "batch size")
_SEQ = flags.DEFINE_integer("seq_len", 256, "sequence length")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")


def main(argv) -> int:
    del argv
    import jax
    import numpy as np
    import optax
    import torch
    import transformers
    from flax import nnx

    from sovits2_jax.bench.timing import compare, machine_line, pin_threads
    from sovits2_jax.convert import hf_qwen2
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
    from sovits2_jax.parity.random_reference import save_random_hf_qwen2

    config = Qwen2Config.from_dict(cli.validated(_CONFIG, validate).model.to_dict())
    src = save_random_hf_qwen2(scratch_dir("bench-qwen2-"), config)
    graphdef, params = params_from_flat(
        lambda: Qwen2ForCausalLM(config, rngs=nnx.Rngs(0)), hf_qwen2.load_hf_params(src, config)
    )
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (_BATCH.value, _SEQ.value + 1))

    def loss_fn(params, ids):
        logits, _ = nnx.merge(graphdef, params)(ids[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    step = jax.jit(jax.value_and_grad(loss_fn))
    ids_j = jax.numpy.asarray(ids)
    pin_threads()
    ref = transformers.Qwen2ForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="sdpa")
    ids_t = torch.from_numpy(ids)

    def torch_step():
        ref.zero_grad(set_to_none=True)
        logits = ref(input_ids=ids_t[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids_t[:, 1:].reshape(-1))
        loss.backward()

    print(machine_line(), flush=True)
    print(f"# {n_params / 1e6:.1f}M parameters, batch {_BATCH.value}x{_SEQ.value}, {jax.devices()[0].platform}")
    compare("qwen2", f"fwd+bwd step ({n_params / 1e6:.0f}M, {_BATCH.value}x{_SEQ.value})",
            lambda: jax.block_until_ready(step(params, ids_j)), torch_step, repeats=_REPEATS.value)  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
