"""GPT-SoVITS s2 decode (codes + text + reference spectrogram -> 32 kHz waveform) at the released v2 size:
our jitted decode vs gpt-sovits-infer's ``SynthesizerTrn.decode`` on the same weights, same process, CPU.
Also the linear-spectrogram frontend vs ``spectrogram_torch``. Real-time factor = decode time / audio seconds.

python -m sovits2_jax.bench.vits [--seconds=5] [--repeats=3] [--threads=N]
"""

from __future__ import annotations

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import compare, machine_line, pin_threads

flags.DEFINE_float("seconds", 5.0, "audio length to synthesise")
flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = the cores, as XLA)")


def main(argv) -> None:
    del argv
    args = flags.FLAGS

    import jax
    import jax.numpy as jnp
    import torch

    from sovits2_jax.audio.spectrogram import linear_spectrogram
    from sovits2_jax.parity.references import vits as parity_vits
    from sovits2_jax.parity.torch_refs import import_gpt_sovits

    pin_threads(args.threads)
    print(machine_line(), flush=True)
    cfg, ref, graphdef, params = parity_vits.reference_pair("v2", 0)
    code_frames = round(args.seconds * 25)
    inputs = parity_vits.make_inputs(
        cfg, code_frames=code_frames, text_tokens=max(8, code_frames // 3), refer_frames=150, seed=0
    )
    audio_s = code_frames * cfg.content_upsample * cfg.hop_length / cfg.sampling_rate
    codes_t, text_t, refer_t = (torch.from_numpy(inputs[k]) for k in ("codes", "text", "refer"))
    args_j = (
        jnp.asarray(inputs["codes"], jnp.int32),
        jnp.asarray(inputs["text"], jnp.int32),
        jnp.asarray(inputs["refer"].transpose(0, 2, 1)),
        jnp.asarray(0.0, jnp.float32),
        None,
    )

    def ours():
        return parity_vits.jit_decode(graphdef, params, *args_j).block_until_ready()

    def theirs():
        with torch.no_grad():
            return ref.decode(codes_t, text_t, refer_t, noise_scale=0.0)

    err = np.abs(np.asarray(ours())[:, None] - theirs().numpy()).max()
    compare("vits", f"decode RTF s2-v2 {audio_s:.1f}s audio cpu (max abs diff {err:.1e})", ours, theirs,
            unit="s/s", scale=1 / audio_s, repeats=args.repeats)  # fmt: skip

    models = import_gpt_sovits("gpt_sovits.module.mel_processing")
    wav = np.clip(
        0.3 * np.random.default_rng(0).standard_normal((1, int(args.seconds * cfg.sampling_rate))), -1, 1
    ).astype(np.float32)
    spec_j = jax.jit(lambda w: linear_spectrogram(w, n_fft=cfg.n_fft, hop_size=cfg.hop_length, win_size=cfg.win_length))
    wav_j, wav_t = jnp.asarray(wav), torch.from_numpy(wav)
    compare("vits", f"linear spectrogram {args.seconds:.1f}s 32kHz", lambda: spec_j(wav_j).block_until_ready(),
            lambda: models.spectrogram_torch(wav_t, cfg.n_fft, cfg.sampling_rate, cfg.hop_length, cfg.win_length),
            repeats=args.repeats * 3)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
