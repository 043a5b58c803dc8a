"""HuBERT encoder speed (seconds of compute per second of audio, interleaved rounds): ours (jitted) vs
transformers.HubertModel on the same batch and weights, fp32 on the default JAX device and torch's CPU.

python -m sovits2_jax.bench.hubert [--preset=hubert_base|tiny | --src=HF_DIR] [--batch=4] [--seconds=10] [--repeats=5]
"""

from __future__ import annotations

import tempfile

from absl import flags

from sovits2_jax import cli

_PRESET = flags.DEFINE_enum("preset", "hubert_base", ["hubert_base", "tiny"], "random-init shape (without --src)")
_SRC = flags.DEFINE_string("src", None, "a HF HuBERT directory (chinese-hubert-base, mHuBERT-147) instead of --preset")
_BATCH = flags.DEFINE_integer("batch", 4, "rows per forward")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "seconds of 16 kHz audio per row")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")


def main(argv) -> int:
    del argv
    from sovits2_jax.models import hubert
    from sovits2_jax.parity.references.hubert import save_random_hf_hubert

    if _BATCH.value < 1 or _SECONDS.value <= 0 or _REPEATS.value < 1:
        raise cli.Error("--batch and --repeats must be >= 1 and --seconds > 0")
    with tempfile.TemporaryDirectory(prefix="bench-hubert-") as tmp:
        src = _SRC.value or save_random_hf_hubert(tmp, hubert.PRESETS[_PRESET.value]())
        return _bench(src)


def _bench(src) -> int:
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from sovits2_jax.bench.timing import compare, machine_line, pin_threads
    from sovits2_jax.convert import hf_hubert
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models import hubert

    config = hf_hubert.config_from_hf(hf_hubert.read_hf_config(src), src)
    flat, _ = hf_hubert.load_hf_params(src, config)
    graphdef, params = params_from_flat(lambda: hubert.HubertModel(config, rngs=nnx.Rngs(0)), flat)
    del flat
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))

    n = int(_SECONDS.value * config.sample_rate)
    wav = (np.random.default_rng(0).normal(0, 0.1, (_BATCH.value, n))).astype(np.float32)
    audio_s = _BATCH.value * _SECONDS.value

    forward = jax.jit(lambda p, w: nnx.merge(graphdef, p)(w))
    wav_j = jax.numpy.asarray(wav)
    pin_threads()

    ref = transformers.HubertModel.from_pretrained(src, dtype=torch.float32, attn_implementation="sdpa").eval()
    wav_t = torch.from_numpy(wav)

    def torch_forward():
        with torch.inference_mode():
            ref(wav_t)

    print(machine_line(), flush=True)
    print(f"# {n_params / 1e6:.1f}M parameters, {jax.devices()[0].platform}")
    compare("hubert", f"forward RTF ({n_params / 1e6:.0f}M, {_BATCH.value}x{_SECONDS.value:g}s)",
            lambda: jax.block_until_ready(forward(params, wav_j)), torch_forward, unit="s/s", scale=1 / audio_s,
            repeats=_REPEATS.value)  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
