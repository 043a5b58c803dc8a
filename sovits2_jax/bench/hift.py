"""HiFT vocoder real-time factor and GAN training step time: ours (jitted) vs cosyvoice-minicpmo (PyTorch).

python -m sovits2_jax.bench.hift [--frames=250] [--batch=1] [--gan_frames=51] [--gan_batch=1] [--dtype=float32]

Both sides use the same real-size weights (CosyVoice2 HiFT, base 512, 24 kHz). The GAN step is one
discriminator turn plus one generator turn (forward, backward, Adam with clipping) on a 24480-sample segment, as
CosyVoice2's hifigan recipe trains. On a GPU the PyTorch reference runs on CUDA in float32; ``--dtype=bfloat16``
sets our compute dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

from absl import flags

from sovits2_jax import cli

_FRAMES = flags.DEFINE_integer("frames", 250, "mel frames for the inference RTF (50 per second of audio)")
_BATCH = flags.DEFINE_integer("batch", 1, "inference batch size")
_GAN_FRAMES = flags.DEFINE_integer("gan_frames", 51, "mel frames per GAN training segment (51 = 24480 samples)")
_GAN_BATCH = flags.DEFINE_integer("gan_batch", 1, "GAN training batch size")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "our compute dtype")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")
_SKIP_GAN = flags.DEFINE_bool("skip_gan", False, "only measure inference")


def _torch_discriminator():
    import types

    from sovits2_jax.parity.torch_refs import import_cosyvoice

    import_cosyvoice("matcha.hifigan.models")
    if "torchaudio.transforms" not in sys.modules:  # DiscriminatorR's import; unused by CosyVoice2
        stub = types.ModuleType("torchaudio.transforms")
        stub.Spectrogram = None
        sys.modules["torchaudio.transforms"] = stub
    from cosyvoice.hifigan.discriminator import MultipleDiscriminator, MultiResSpecDiscriminator
    from matcha.hifigan.models import MultiPeriodDiscriminator

    return MultipleDiscriminator(MultiPeriodDiscriminator(), MultiResSpecDiscriminator())


def main(argv) -> int:
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from sovits2_jax.bench.timing import compare, machine_line, pin_threads
    from sovits2_jax.convert import cosyvoice2_hift
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.hift import HiFTGenerator
    from sovits2_jax.parity.references import hift as parity_hift

    platform = jax.devices()[0].platform
    pin_threads()
    tdev = "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
    config = cosyvoice2_hift.default_config()
    ref = parity_hift.build_reference(config, seed=0, perturb=False)
    disc_ref = _torch_discriminator()
    items = [(f"generator.{k}", v.detach().numpy()) for k, v in ref.state_dict().items()]
    items += [(f"discriminator.{k}", v.detach().numpy()) for k, v in disc_ref.state_dict().items()]
    nested = cosyvoice2_hift.torch_to_params(items, config)
    disc_nested = nested.pop("discriminator")
    ours_config = dataclasses.replace(config, dtype=_DTYPE.value)
    g_graphdef, g_params = params_from_flat(lambda: HiFTGenerator(ours_config, rngs=nnx.Rngs(0)), flatten(nested))
    n_g = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(g_params))
    ref, disc_ref = ref.to(tdev), disc_ref.to(tdev)
    print(machine_line(), flush=True)
    print(
        f"# HiFT {n_g / 1e6:.1f}M parameters, {platform} ({jax.devices()[0].device_kind}), our dtype {_DTYPE.value}, "
        f"torch {tdev} float32, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    # -- inference RTF -------------------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    frames, batch = _FRAMES.value, _BATCH.value
    mel = (rng.standard_normal((batch, frames, 80)) - 4.0).astype(np.float32)
    seconds = frames * config.upsample_scale / config.sampling_rate

    infer = jax.jit(lambda p, m, k: nnx.merge(g_graphdef, p).inference(m, k)[0])
    mel_j, key = jnp.asarray(mel), jax.random.key(0)
    mel_t = torch.from_numpy(mel.transpose(0, 2, 1).copy()).to(tdev)

    def torch_infer():
        ref.inference(speech_feat=mel_t)
        if tdev == "cuda":
            torch.cuda.synchronize()

    compare("hift", f"inference RTF ({seconds:.1f} s audio, batch {batch})",
            lambda: jax.block_until_ready(infer(g_params, mel_j, key)), torch_infer, unit="s/s",
            scale=1 / (batch * seconds), repeats=_REPEATS.value)  # fmt: skip
    if _SKIP_GAN.value:
        return 0

    # -- GAN step (discriminator turn + generator turn) ---------------------------------------------------
    from cosyvoice.hifigan.hifigan import HiFiGan
    from matcha.utils.audio import mel_spectrogram as torch_mel

    from sovits2_jax.configs import cosyvoice2 as cosyvoice2_configs
    from sovits2_jax.parallel.mesh import make_mesh
    from sovits2_jax.parallel.sharding import activation_rules
    from sovits2_jax.train import family as family_lib
    from sovits2_jax.train import state as state_lib
    from sovits2_jax.train import step as step_lib

    gf, gb = _GAN_FRAMES.value, _GAN_BATCH.value
    samples = gf * config.upsample_scale
    t = np.arange(samples) / config.sampling_rate
    speech = (0.3 * np.sin(2 * np.pi * 150 * t)[None] + 0.01 * rng.standard_normal((gb, samples))).astype(np.float32)
    batch_np = {
        "speech": speech,
        "speech_feat": (rng.standard_normal((gb, gf, 80)) - 4.0).astype(np.float32),
        "pitch_feat": np.full((gb, gf), 150.0, np.float32),
        "speech_feat_len": np.full((gb,), gf, np.int32),
        "valid": np.ones((gb,), bool),
    }
    # the trainer's own step of the hift family (Adam 2e-4 + clip 5 for both players), the torch weights as init
    gan_config = cosyvoice2_configs.get_config("hift")
    gan_config.model.dtype = _DTYPE.value
    family = family_lib.get(gan_config.family)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    with jax.set_mesh(mesh), activation_rules(gan_config.sharding.rules):
        built = state_lib.build(family, gan_config, mesh, lambda p: {"generator": nested, "discriminator": disc_nested})
        step = jax.jit(step_lib.make_train_step(family, gan_config, built.graphdefs, built.txs), donate_argnums=0)
    batch_j = {k: jnp.asarray(v) for k, v in batch_np.items()}
    holder = {"state": built.state}

    def ours_step():
        with jax.set_mesh(mesh):
            holder["state"], metrics = step(holder["state"], batch_j, jnp.int32(0))
        jax.block_until_ready(metrics)


    gan_mel = functools.partial(
        torch_mel, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=None
    )
    gan = HiFiGan(ref.train(), disc_ref.train(), [gan_mel])
    opt_g = torch.optim.Adam(ref.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(disc_ref.parameters(), lr=2e-4)
    batch_t = {k: torch.from_numpy(v).to(tdev) for k, v in batch_np.items()}

    def torch_step():
        for turn, opt, params in (
            ("discriminator", opt_d, disc_ref.parameters()),
            ("generator", opt_g, ref.parameters()),
        ):
            opt.zero_grad(set_to_none=True)
            loss = gan({**batch_t, "turn": turn}, tdev)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params), 5.0)
            opt.step()
        if tdev == "cuda":
            torch.cuda.synchronize()

    compare("hift", f"GAN step D+G ({samples} samples, batch {gb})", ours_step, torch_step, warmup=2,
            repeats=_REPEATS.value)  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
