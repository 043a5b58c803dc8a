"""Synthesis from the command line, every CosyVoice2 mode:

    python -m sovits2_jax.infer --model_dir DIR --mode zero_shot --text "Hello." \\
        --prompt_wav prompt.wav --prompt_text "Transcript of the prompt." --out out.wav [--stream] [--dump DIR] \
        [--speed 1.5]

Modes: sft (--spk_id), zero_shot (--prompt_wav --prompt_text), cross_lingual (--prompt_wav), instruct2
(--instruct --prompt_wav), vc (--source_wav --prompt_wav). ``--model_dir``: a CosyVoice2 model directory, our
converted Orbax directory, or a trainer workdir / checkpoint with ``--base`` for the other parts. ``--dump DIR``
writes ``DIR/<out name>.npz`` with each segment's text ids, speech tokens and mel (the offline flow's mel, also
with ``--stream``). ``--speed`` (offline only, as CosyVoice2) stretches the mel to 1/speed of its length before
HiFT. A bad input prints one ``error:`` line, exits 1 and leaves no output file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli

FLAGS = flags.FLAGS
# what each mode needs besides --text
REQUIRED = {"sft": ("spk_id",), "zero_shot": (), "cross_lingual": (), "instruct2": ("instruct",),
            "vc": ("source_wav", "prompt_wav")}  # fmt: skip


def _check_flags() -> None:
    if not FLAGS.model_dir or not FLAGS.out:
        raise cli.Error("give --model_dir and --out")
    missing = [f"--{n}" for n in REQUIRED[FLAGS.mode] if not getattr(FLAGS, n)]
    if FLAGS.mode != "vc" and FLAGS.text is None:
        missing.insert(0, "--text")
    if FLAGS.mode in ("zero_shot", "cross_lingual", "instruct2") and not (FLAGS.prompt_wav or FLAGS.spk_id):
        missing.append("--prompt_wav (or --spk_id of a stored zero-shot speaker)")
    if FLAGS.mode == "zero_shot" and not FLAGS.spk_id and not FLAGS.prompt_text:
        missing.append("--prompt_text")
    if missing:
        raise cli.Error(f"mode {FLAGS.mode} needs {', '.join(missing)}")
    if not FLAGS.speed > 0:
        raise cli.Error(f"--speed must be > 0, got {FLAGS.speed}")
    if FLAGS.stream and FLAGS.speed != 1.0:
        raise cli.Error("--speed works offline only (CosyVoice2 stretches the whole mel); drop --stream")
    out_dir = Path(FLAGS.out).resolve().parent
    if not out_dir.is_dir():
        raise cli.Error(f"--out: directory {out_dir} does not exist")


def _write_stream(path: str, chunks, sample_rate: int) -> int:
    """Appends chunks to ``path``.tmp as they come; renamed to ``path`` when complete (removed on error)."""
    import soundfile as sf

    tmp, n = f"{path}.tmp", 0
    try:
        with sf.SoundFile(tmp, "w", sample_rate, 1, subtype="PCM_16", format="WAV") as f:
            for chunk in chunks:
                f.write(np.clip(chunk, -1.0, 1.0))
                n += len(chunk)
        if n == 0:
            raise cli.Error("the model produced no audio")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n


def _dump(directory: str, name: str, synthesis) -> Path:
    arrays = {}
    for i, (x, tokens, mel) in enumerate(zip(synthesis.inputs, synthesis.speech_tokens, synthesis.mels)):
        arrays.update({f"text_{i}": x.text, f"prompt_text_{i}": x.prompt_text, f"speech_token_{i}": tokens,
                       f"mel_{i}": mel})  # fmt: skip
    first = synthesis.inputs[0]
    arrays.update(flow_prompt_speech_token=first.flow_prompt_speech_token, prompt_speech_feat=first.prompt_speech_feat,
                  flow_embedding=first.flow_embedding)  # fmt: skip
    os.makedirs(directory, exist_ok=True)
    path = Path(directory) / f"{name}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _synthesize() -> None:
    from sovits2_jax.audio.io import write_wav
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    tts = TTS.from_pretrained(FLAGS.model_dir, base=FLAGS.base)
    if FLAGS.compile_cache != "off":
        from sovits2_jax.infer import compile_cache

        compile_cache.enable(FLAGS.compile_cache)
    kw = dict(prompt_wav=FLAGS.prompt_wav, prompt_text=FLAGS.prompt_text, spk_id=FLAGS.spk_id,
              instruct=FLAGS.instruct, source_wav=FLAGS.source_wav)  # fmt: skip
    inputs = tts.inputs(FLAGS.mode, FLAGS.text or "", normalize=FLAGS.text_frontend, **kw)
    synthesis = None
    if FLAGS.dump or not FLAGS.stream:
        synthesis = tts.run(inputs, FLAGS.seed, keep_mels=bool(FLAGS.dump), speed=FLAGS.speed)
    if FLAGS.stream:
        samples = _write_stream(FLAGS.out, tts.stream_inputs(inputs, FLAGS.seed), tts.sample_rate)
    else:
        write_wav(FLAGS.out, synthesis.audio, tts.sample_rate)
        samples = len(synthesis.audio)
    if FLAGS.dump:
        print(f"dumped {_dump(FLAGS.dump, Path(FLAGS.out).stem, synthesis)}")
    print(f"wrote {FLAGS.out}: {samples / tts.sample_rate:.2f} s in {len(inputs)} segment(s)")


def define_flags() -> None:
    """The command's flags (defined only when run as a program, so importing this module defines none)."""
    flags.DEFINE_string("model_dir", None, "CosyVoice2 model dir, converted Orbax dir or trainer workdir/checkpoint")
    flags.DEFINE_string("base", None, "model dir for the parts a trainer checkpoint lacks")
    flags.DEFINE_enum("mode", "zero_shot", ["sft", "zero_shot", "cross_lingual", "instruct2", "vc"], "synthesis mode")
    flags.DEFINE_string("text", None, "text to synthesise (not for vc)")
    flags.DEFINE_string("prompt_wav", None, "prompt recording (any sample rate, at most 30 s)")
    flags.DEFINE_string("prompt_text", None, "transcript of the prompt (zero_shot)")
    flags.DEFINE_string("spk_id", None, "speaker id from spk2info.pt (sft; or a stored zero-shot speaker)")
    flags.DEFINE_string("instruct", None, "instruction (instruct2), e.g. 'Speak happily.'")
    flags.DEFINE_string("source_wav", None, "speech to re-voice (vc)")
    flags.DEFINE_string("out", None, "output wav (16-bit PCM)")
    flags.DEFINE_bool("stream", False, "synthesise chunk by chunk, appending to the output as chunks come")
    flags.DEFINE_string("dump", None, "directory for an npz of text ids, speech tokens and mels")
    flags.DEFINE_integer("seed", 0, "sampling seed (segment i uses seed + i)")
    flags.DEFINE_float("speed", 1.0, "speech rate (> 1 faster; offline only): the mel is stretched to 1/speed")
    flags.DEFINE_bool("text_frontend", True, "normalise and split the text (wetext)")
    flags.DEFINE_string(
        "compile_cache",
        None,
        "JAX persistent compilation cache dir (default $SOVITS2_JAX_CACHE or ~/.cache/sovits2_jax/xla; 'off' disables)",
    )


def main(argv: list[str]) -> int:
    from sovits2_jax.audio.io import AudioError
    from sovits2_jax.convert.mapping import ConversionError
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError
    from sovits2_jax.infer.cosyvoice2.loading import ModelError

    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    _check_flags()
    try:
        _synthesize()
    except (FrontendError, ModelError, AudioError, ConversionError, FileNotFoundError) as e:
        raise cli.Error(str(e)) from e
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
