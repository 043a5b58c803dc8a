"""``python -m sovits2_jax.infer`` and recipe stage 4 (``python -m sovits2_jax.infer.cosyvoice2.recipe``) as real
processes on a tiny random CosyVoice2 model directory: a zero_shot wav with its --dump, stage 4 reading only the
shards it needs (and giving the CLI's audio for the same request), and every bad input -> one error line,
exit 1, no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

PROMPT_TEXT = "The wind carried the smell of pine trees down into the valley."
TEXT = "Good morning, how are you today?"


def _run(args, env, cwd):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def _write_prompt(path) -> None:
    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    speech = engine.synthesize(PROMPT_TEXT, "en-us+f3").astype(np.float32) / 32768
    sf.write(path, speech, engine.sample_rate, subtype="PCM_16")  # 22.05 kHz: resampled


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_cosyvoice2_dir, xla_cache):
    root = tmp_path_factory.mktemp("infer_cli")
    _write_prompt(root / "prompt.wav")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "SOVITS2_JAX_CACHE": str(xla_cache), "JAX_PLATFORMS": "cpu", "PYTHONPATH": repo}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process
    return root, env, str(tiny_cosyvoice2_dir)


@pytest.fixture(scope="module")
def zero_shot_run(work, build_once):
    """The zero_shot CLI run (its own prompt.wav, out.wav and dump/ in one directory), once per session."""
    _, env, model = work

    def run(root):
        root.mkdir()
        _write_prompt(root / "prompt.wav")
        prompt = ["--prompt_wav", str(root / "prompt.wav"), "--prompt_text", PROMPT_TEXT]
        args = ["-m", "sovits2_jax.infer", "--model_dir", model, "--mode", "zero_shot", "--text", TEXT, *prompt,
                "--out", str(root / "out.wav"), "--dump", str(root / "dump")]  # fmt: skip
        proc = _run(args, env, root)
        assert proc.returncode == 0, proc.stderr[-3000:]

    root = build_once("infer_cli_zero_shot", run)
    return root / "out.wav", root / "dump" / "out.npz", root / "prompt.wav"


def test_zero_shot_writes_a_wav_and_its_dump(zero_shot_run):
    from sovits2_jax.text import normalize as text_frontend
    from sovits2_jax.text.tokenizer import get_tokenizer

    out, dump, _ = zero_shot_run
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 24000 and audio.ndim == 1 and np.abs(audio).max() > 0
    with np.load(dump) as d:
        tok = get_tokenizer()
        np.testing.assert_array_equal(d["text_0"], tok.encode(text_frontend.normalize(TEXT)))
        np.testing.assert_array_equal(d["prompt_text_0"], tok.encode(PROMPT_TEXT))
        tokens, mel = d["speech_token_0"], d["mel_0"]
        assert 2 * len(d["text_0"]) <= len(tokens) <= 20 * len(d["text_0"]) and tokens.max() < 6561
        assert mel.shape == (2 * len(tokens), 80)  # the flow's 2:1 upsampling of the generated tokens only
        assert d["prompt_speech_feat"].shape == (2 * len(d["flow_prompt_speech_token"]), 80)
        assert len(audio) == mel.shape[0] * 480  # HiFT: 480 samples per mel frame
    assert not list(out.parent.glob("*.tmp"))


def _write_shards(root, dump, prompt_wav):
    """Two Parquet shards: shard 0 holds the prompt as utterance u0 (with the CLI's own prompt features), shard 1
    is garbage and holds only an utterance stage 4 is not asked about, so it must not be read."""
    from sovits2_jax.data.prep import parquet_writer

    des = root / "parquet"
    des.mkdir()
    with np.load(dump) as d:
        emb, tokens = d["flow_embedding"], d["flow_prompt_speech_token"]
    row = dict(utt="u0", wav=str(prompt_wav), text=PROMPT_TEXT, spk="s0", utt_embedding=emb, spk_embedding=emb,
               speech_token=tokens)  # fmt: skip
    parquet_writer.write_shard(str(des), 0, [row])
    parquet_writer.write_shard(str(des), 1, [{**row, "utt": "other"}])
    bad, _, _ = parquet_writer.shard_paths(str(des), 1)
    with open(bad, "wb") as f:
        f.write(b"not a parquet file")
    (des / "data.list").write_text("".join(parquet_writer.shard_paths(str(des), i)[0] + "\n" for i in (0, 1)))
    (des / "utt2data.list").write_text("".join(parquet_writer.shard_paths(str(des), i)[1] + "\n" for i in (0, 1)))
    return des


def test_recipe_stage4_reads_only_its_shards_and_matches_the_cli(work, zero_shot_run):
    root, env, model = work
    out, dump, prompt_wav = zero_shot_run
    des = _write_shards(root, dump, prompt_wav)
    (root / "tts_text.json").write_text(json.dumps({"u0": [TEXT], "missing_utt": ["Never said."]}))
    result = root / "result"
    args = ["-m", "sovits2_jax.infer.cosyvoice2.recipe", "--model_dir", model, "--data_list", str(des / "data.list"),
            "--tts_text", str(root / "tts_text.json"), "--mode", "zero_shot", "--result_dir", str(result)]  # fmt: skip
    proc = _run(args, env, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 1 wav(s)" in proc.stdout and "skipped 1" in proc.stdout
    lines = (result / "wav.scp").read_text().splitlines()
    assert lines == [f"u0_0 {result / 'u0_0.wav'}"]
    # the same prompt (text, tokens, 24 kHz mel, embedding) and text with the same seed: the CLI's audio
    np.testing.assert_array_equal(sf.read(result / "u0_0.wav", dtype="int16")[0], sf.read(out, dtype="int16")[0])


def _incomplete_model(root, model):
    broken = root / "no_hift"
    if not broken.exists():
        broken.mkdir()
        for item in os.listdir(model):
            if item != "hift.pt":
                os.symlink(os.path.join(model, item), broken / item)
    return broken


def test_bad_inputs_give_one_error_line_and_no_output(work):
    """One process per bad input (the 30 s, silent and other prompt checks are exercised in-process by
    tests/parity/test_infer_frontend.py; here the CLI's handling of a FrontendError is shown by the corrupt one)."""
    root, env, model = work
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00garbage")

    def sft(spk):
        return ["--mode", "sft", "--text", TEXT, "--spk_id", spk]

    cases = {
        "empty": (
            ["--mode", "cross_lingual", "--text", "  ", "--prompt_wav", str(root / "prompt.wav")],
            "the text to synthesise is empty",
        ),
        "corrupt": (
            ["--mode", "cross_lingual", "--text", TEXT, "--prompt_wav", str(root / "corrupt.wav")],
            "unreadable audio",
        ),
        "missing": (
            ["--mode", "cross_lingual", "--text", TEXT, "--prompt_wav", str(root / "nope.wav")],
            "nope.wav: no such file",
        ),
        "speaker": (sft("carol"), "unknown speaker id 'carol'; known speakers: spk_a, spk_b"),
        "no_hift": ([*sft("spk_a"), "--model_dir", str(_incomplete_model(root, model))], "lacks hift.pt"),
        "no_dir": ([*sft("spk_a"), "--model_dir", str(root / "nope")], "no such model directory"),
    }
    for name, (args, message) in cases.items():
        out = root / f"bad_{name}.wav"
        if "--model_dir" not in args:
            args = ["--model_dir", model, *args]
        proc = _run(["-m", "sovits2_jax.infer", *args, "--out", str(out)], env, root)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1, (name, proc.stderr[-2000:])
        assert len(errors) == 1 and message in errors[0], (name, errors, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, name
        assert not out.exists() and not list(root.glob(f"bad_{name}*")), name


def test_streamed_output_is_complete_or_absent(tmp_path):
    """--stream appends chunks to OUT.tmp as they come and renames it at the end; a failure midway leaves nothing."""
    from sovits2_jax.infer.__main__ import _write_stream

    chunks = [np.full(480 * k, 0.1 * k, np.float32) for k in (1, 2, 3)]
    out = tmp_path / "s.wav"
    assert _write_stream(str(out), iter(chunks), 24000) == 480 * 6
    audio, sr = sf.read(out, dtype="int16")
    assert sr == 24000
    np.testing.assert_array_equal(audio, sf.read(_pcm16(tmp_path, np.concatenate(chunks)), dtype="int16")[0])

    def failing():
        yield chunks[0]
        raise ValueError("the LM produced no speech tokens")

    with pytest.raises(ValueError, match="no speech tokens"):
        _write_stream(str(tmp_path / "f.wav"), failing(), 24000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.wav", "s.wav"]


def _pcm16(directory, audio):
    path = directory / "ref.wav"
    sf.write(path, audio, 24000, subtype="PCM_16")
    return path
