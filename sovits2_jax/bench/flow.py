"""CosyVoice2 flow benchmark: ours (JAX) vs cosyvoice-minicpmo (PyTorch), same weights, batch and length.

1. Estimator training step: forward + backward of the masked flow-matching MSE w.r.t. all estimator parameters.
2. Full inference: tokens + prompt -> mel, encoder + 10 Euler steps with CFG (the reference runs batch 1).
On a CUDA machine with ``--dtype bfloat16`` both run in bf16 (ours: bf16 params and activations; torch: autocast).

python -m sovits2_jax.bench.flow [--size=real|tiny] [--frames=200] [--batch=2] [--tokens=100] [--dtype=float32]
"""

from __future__ import annotations

import numpy as np
from absl import flags

from sovits2_jax import cli

flags.DEFINE_enum("size", "real", ["real", "tiny"], "model size")
flags.DEFINE_integer("frames", 200, "mel frames of the estimator step")
flags.DEFINE_integer("batch", 2, "batch of the estimator step")
flags.DEFINE_integer("tokens", 100, "generated tokens of the inference (prompt = 25)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype of both sides")
flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")
flags.DEFINE_integer("torch_threads", 0, "0 = all cores (JAX uses all cores too)")


def _sync_torch(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def main(argv) -> None:
    del argv
    args = flags.FLAGS

    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from sovits2_jax.bench.timing import compare, machine_line, pin_threads
    from sovits2_jax.parity.references import flow as pf
    from sovits2_jax.parity.torch_refs import to_torch

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    if args.dtype == "bfloat16" and not gpu:
        raise cli.Error("--dtype=bfloat16 needs a CUDA GPU for both frameworks")
    tdev = "cuda" if gpu else "cpu"
    pin_threads(args.torch_threads)
    config, ref, _, graphdef, params, _, _ = pf._setup(None, size=args.size, device="gpu" if gpu else "cpu", seed=0)
    ref = ref.to(tdev)
    jdtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    params = jax.tree.map(lambda a: a.astype(jdtype), params)
    tag = f"{args.size}, {args.dtype}, {'cuda' if gpu else 'cpu'}"

    # 1. estimator forward + backward
    x = pf.estimator_inputs(config, args.batch, args.frames, seed=0)
    target = np.random.default_rng(1).standard_normal(x["x"].shape).astype(np.float32)
    tr = lambda a: jnp.asarray(a, jdtype).transpose(0, 2, 1)

    def our_loss(params, x, target):
        est = nnx.merge(graphdef, params).estimator
        m = jnp.asarray(x["mask"][:, 0], jdtype)
        pred = est(tr(x["x"]), m, tr(x["mu"]), jnp.asarray(x["t"]), jnp.asarray(x["spks"], jdtype), tr(x["cond"]))
        err = (pred.astype(jnp.float32) - tr(target).astype(jnp.float32)) * m[..., None]
        return jnp.sum(err**2) / (jnp.sum(m) * pred.shape[-1])

    step = jax.jit(jax.value_and_grad(our_loss))

    est = ref.decoder.estimator.train()
    targs = [to_torch(x[k], tdev) for k in ("x", "mask", "mu", "t", "spks", "cond")]
    ttarget = to_torch(target, tdev)

    def torch_step():
        est.zero_grad(set_to_none=True)
        with torch.autocast(tdev, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            pred = est(*targs)
            loss = torch.sum(((pred.float() - ttarget) * targs[1]) ** 2) / (torch.sum(targs[1]) * pred.shape[1])
        loss.backward()
        _sync_torch(tdev)

    print(machine_line(), flush=True)
    compare("flow", f"estimator fwd+bwd (batch {args.batch}, {args.frames} frames, {tag})",
            lambda: jax.block_until_ready(step(params, x, target)), torch_step, repeats=args.repeats)  # fmt: skip

    # 2. full 10-step inference, batch 1
    inputs = pf.flow_inputs(config, args.tokens, 25, seed=0)
    ref.eval()

    def our_infer(params, d):
        mel, _ = nnx.merge(graphdef, params).inference(
            d["token"], d["token_len"], d["prompt_token"], d["prompt_token_len"],
            jnp.asarray(d["prompt_feat"], jdtype), d["prompt_feat_len"], jnp.asarray(d["embedding"], jdtype),
            jnp.asarray(d["noise"], jdtype).transpose(0, 2, 1), streaming=False,
        )  # fmt: skip
        return mel

    infer = jax.jit(our_infer)
    ref.decoder.rand_noise = to_torch(inputs["noise"], tdev)
    names = ("token", "token_len", "prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding")
    targs = [to_torch(inputs[k], tdev) for k in names]

    def torch_infer():
        with torch.no_grad(), torch.autocast(tdev, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            ref.inference(*targs, streaming=False, finalize=True)
        _sync_torch(tdev)

    frames = 2 * args.tokens
    compare("flow", f"10-step CFG inference ({args.tokens} tokens -> {frames} frames + 25-token prompt, {tag})",
            lambda: jax.block_until_ready(infer(params, inputs)), torch_infer, repeats=args.repeats)  # fmt: skip

    # 3. streaming: CosyVoice2's chunk schedule over the same tokens; torch re-runs the flow per chunk (its way)
    if args.dtype == "float32":
        bench_streaming(args, config, ref, graphdef, params, inputs, tdev, tag)


def bench_streaming(args, config, ref, graphdef, params, inputs, tdev, tag) -> None:
    import torch

    from sovits2_jax.bench.timing import Samples, interleaved, record
    from sovits2_jax.infer.cosyvoice2.flow_streaming import CachedFlowStreamer, FlowStreamer, chunk_plan, stream_all
    from sovits2_jax.parity.torch_refs import to_torch

    prompt = inputs["prompt_token"].shape[1]
    noise = inputs["noise"][0].T
    frames = 2 * (prompt + args.tokens) + 200

    def ours(cls, **kw):
        s = cls(graphdef, params, inputs["prompt_token"], inputs["prompt_feat"], inputs["embedding"],
                np.pad(noise, ((0, 200), (0, 0))), **kw)  # fmt: skip
        return stream_all(s, inputs["token"][0], push_size=args.tokens)

    names = ("prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding")
    fixed = [to_torch(inputs[k], tdev) for k in names]
    tokens = to_torch(inputs["token"], tdev)
    ref.decoder.rand_noise = to_torch(inputs["noise"], tdev)

    def torch_stream():
        with torch.no_grad():
            for c in chunk_plan(prompt, args.tokens):
                ref.inference(tokens[:, : c.end], torch.tensor([c.end]), *fixed, streaming=True, finalize=c.finalize)

    seconds = interleaved({"recompute": lambda: ours(FlowStreamer),
                           "cached": lambda: ours(CachedFlowStreamer, max_frames=frames), "torch": torch_stream},
                          repeats=args.repeats)  # fmt: skip
    ms = {k: Samples(tuple(t * 1e3 for t in v)) for k, v in seconds.items()}
    what = f"streaming {args.tokens} tokens + {prompt}-token prompt, {len(chunk_plan(prompt, args.tokens))} chunks"
    record("flow", f"{what}, recompute per chunk ({tag})", ms["recompute"], ms["torch"], "ms")
    record("flow", f"{what}, cached estimator ({tag})", ms["cached"], ms["torch"], "ms")


if __name__ == "__main__":
    cli.run(main)
