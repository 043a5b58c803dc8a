"""Train-step benchmark of the ``llm`` and ``flow`` families against the PyTorch reference modules.

One step = forward + backward + Adam update, on the same weights and batch: ours is the family's loss
(``train/llm.py``, ``train/flow.py``) under ``jax.value_and_grad`` with ``optax.adam``, jitted; the reference is
cosyvoice's ``Qwen2LM`` / ``CausalMaskedDiffWithXvec`` ``forward`` (train mode) with ``torch.optim.Adam``.
The trainer's own step (accumulation, skip guards, metrics) is timed by ``python -m sovits2_jax.train``'s logs.

Last, the trainer itself runs the ``qwen2`` family at the 0.5B shape for a few steps in a subprocess and the step
time and MFU it logs (FLOPs from the compiled step's cost analysis over the device's peak) are printed.

python -m sovits2_jax.bench.train [--size=tiny|real] [--batch=4] [--tokens=100] [--repeats=5]
    [--qwen2_batch=2 --qwen2_seq_len=128 --qwen2_steps=3 | --qwen2_steps=0 to skip]
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import scratch_dir
from sovits2_jax.train.metrics import read_metrics

flags.DEFINE_enum("size", "tiny", ["tiny", "real"], "model size (real: CosyVoice2-0.5B's flow; llm stays tiny on CPU)")
flags.DEFINE_integer("batch", 4, "rows per step")
flags.DEFINE_integer("tokens", 100, "speech tokens per row (flow: mel frames = 2x)")
flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")
flags.DEFINE_integer("torch_threads", 0, "0 = all cores (JAX uses all cores too)")
flags.DEFINE_integer("qwen2_steps", 3, "trainer steps of configs/qwen2.py:0.5b (0: skip)")
flags.DEFINE_integer("qwen2_batch", 2, "its global batch (rows)")
flags.DEFINE_integer("qwen2_seq_len", 128, "its tokens per row")

LR = 1e-4


def _jax_adam_step(loss_fn, params):
    """A jitted ``(params, opt_state, batch, key) -> (params, opt_state, loss)`` of ``loss_fn`` with optax Adam."""
    import jax
    import optax

    tx = optax.adam(LR)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, tx.init(params)


def _jax_runner(step, params, opt_state, batch):
    """One Adam step of ours per call (the state carried over), blocking."""
    import jax

    state = {"params": params, "opt": opt_state, "i": 0}

    def run():
        state["i"] += 1
        state["params"], state["opt"], loss = step(state["params"], state["opt"], batch, jax.random.key(state["i"]))
        jax.block_until_ready(loss)

    return run


def _torch_runner(module, batch):
    """One Adam step of the reference module per call."""
    import torch

    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=LR)

    def run():
        opt.zero_grad(set_to_none=True)
        module(batch, torch.device("cpu"))["loss"].backward()
        opt.step()

    return run


def bench_llm(batch: int, tokens: int) -> str:
    """Qwen2LM (tiny backbone, the parity reference's random weights): CE over uni/bistream sequences."""
    import jax.numpy as jnp
    from flax import nnx

    from sovits2_jax.bench.timing import compare
    from sovits2_jax.convert.cosyvoice2 import load_llm
    from sovits2_jax.parity.references import llm as parity_llm
    from sovits2_jax.parity.torch_refs import to_torch
    from sovits2_jax.train.families.llm import cosyvoice2_lm_loss

    src = parity_llm.write_tiny_model_dir(scratch_dir("bench-train-llm-"), seed=0)
    graphdef, params, config, _ = load_llm(src)
    text_lens = tuple(int(x) for x in np.linspace(tokens // 2, tokens // 5, batch))
    speech_lens = tuple(int(x) for x in np.linspace(tokens, tokens // 2, batch))
    x = parity_llm.make_inputs(config.backbone.vocab_size, config.speech_token_size, 0, text_lens, speech_lens)
    x.pop("bistream_uniform")
    ours_batch = {k: jnp.asarray(v, jnp.int32) for k, v in x.items()} | {"valid": jnp.ones((batch,), bool)}
    draw = jnp.arange(batch) % 2 == 0  # half the rows bistream, as the reference's p 0.5 on average

    def loss_fn(params, b, key):
        del key
        return cosyvoice2_lm_loss(nnx.merge(graphdef, params), b, draw)[0]

    step, opt_state = _jax_adam_step(loss_fn, params)
    ref = parity_llm.reference_model(config, src / parity_llm.BLANK_EN)
    ref.load_state_dict(parity_llm_state(src), strict=True)
    what = f"llm step (tiny Qwen2LM, batch {batch}, <= {max(speech_lens)} speech tokens, fwd+bwd+Adam, cpu)"
    return compare("train", what, _jax_runner(step, params, opt_state, ours_batch),
                   _torch_runner(ref, {k: to_torch(v, "cpu") for k, v in x.items()}), repeats=flags.FLAGS.repeats)


def parity_llm_state(src) -> dict:
    import torch

    state = torch.load(os.path.join(src, "llm.pt"), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def bench_flow(size: str, batch: int, tokens: int) -> str:
    """CausalMaskedDiffWithXvec: the CFM loss with prompt prefix, CFG dropout and the streaming draw."""
    import jax.numpy as jnp
    from flax import nnx

    from sovits2_jax.bench.timing import compare
    from sovits2_jax.parity.references import flow as pf
    from sovits2_jax.parity.torch_refs import to_torch
    from sovits2_jax.train.families.flow import cfm_loss

    config, ref, _, graphdef, params, _, _ = pf._setup(None, size=size, device="cpu", seed=0)
    rng = np.random.default_rng(0)
    lens = np.linspace(tokens, tokens // 2, batch).astype(np.int64)
    ratio = config.token_mel_ratio
    x = {
        "speech_token": rng.integers(0, config.vocab_size, (batch, tokens)).astype(np.int64),
        "speech_token_len": lens,
        "speech_feat": rng.standard_normal((batch, ratio * tokens, config.output_size)).astype(np.float32),
        "speech_feat_len": ratio * lens,
        "embedding": rng.standard_normal((batch, config.spk_embed_dim)).astype(np.float32),
    }
    ints = ("speech_token", "speech_token_len", "speech_feat_len")
    ours_batch = {k: jnp.asarray(v, jnp.int32 if k in ints else jnp.float32) for k, v in x.items()}
    ours_batch["valid"] = jnp.ones((batch,), bool)

    def loss_fn(params, b, key):
        return cfm_loss({"model": nnx.merge(graphdef, params)}, b, key, True)[0]

    step, opt_state = _jax_adam_step(loss_fn, params)
    what = f"flow step ({size}, batch {batch}, {ratio * tokens} mel frames, fwd+bwd+Adam, cpu)"
    return compare("train", what, _jax_runner(step, params, opt_state, ours_batch),
                   _torch_runner(ref, {k: to_torch(v, "cpu") for k, v in x.items()}), repeats=flags.FLAGS.repeats)


def bench_qwen2_trainer(steps: int, batch: int, seq_len: int) -> str:
    """The trainer on ``configs/qwen2.py:0.5b`` (fp32 params, the config's compute dtype) for ``steps`` steps;
    the last step's logged step time, tokens/s and MFU."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, "-m", "sovits2_jax.train", "--config=configs/qwen2.py:0.5b", f"--workdir={workdir}",
               f"--config.train.num_steps={steps}", f"--config.train.batch_size={batch}",
               f"--config.train.seq_len={seq_len}", "--config.train.log_every=1", "--config.train.eval_every=0",
               f"--config.train.checkpoint_every={steps + 1}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise cli.Error(f"the qwen2 0.5b trainer run failed: {proc.stderr.strip().splitlines()[-1:]}")
        last = read_metrics(os.path.join(workdir, "metrics.jsonl"))[-1]
    import jax

    line = (
        f"bench train qwen2 0.5b trainer ({jax.devices()[0].platform}, batch {batch} x {seq_len} tokens, step "
        f"{last['step']}): step_time {last['train/step_time'] * 1e3:.0f} ms, "
        f"{last.get('train/tokens_per_s', float('nan')):.0f} tokens/s, mfu {last.get('train/mfu', float('nan')):.4f}"
    )
    print(line, flush=True)
    return line


def main(argv) -> None:
    del argv

    args = flags.FLAGS
    if args.batch < 1 or args.tokens < 10:
        raise cli.Error("--batch must be >= 1 and --tokens >= 10")
    from sovits2_jax.bench.timing import machine_line, pin_threads

    pin_threads(args.torch_threads)
    print(machine_line(), flush=True)
    bench_llm(args.batch, args.tokens)
    bench_flow(args.size, args.batch, args.tokens)
    if args.qwen2_steps > 0:
        bench_qwen2_trainer(args.qwen2_steps, args.qwen2_batch, args.qwen2_seq_len)


if __name__ == "__main__":
    cli.run(main)
