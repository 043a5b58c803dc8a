"""launch/recipes/libritts.sh stages 0-3 on a LibriTTS-style corpus with subsets and given ONNX models."""

import os
import subprocess
import sys

from sovits2_jax.data.prep import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_recipe_prepares_every_subset_with_the_pretrained_dirs_models(tmp_path, torch_available):
    """Fine-tuning set-up: --pretrained_dir's campplus.onnx and speech_tokenizer_v2.onnx prepare the data (as
    --campplus / --speech_tokenizer would), no stand-in is fitted."""
    from sovits2_jax.parity.reference_models import export_campplus_like, export_s3_tokenizer

    libritts = tmp_path / "LibriTTS"
    corpus.build_corpus(str(libritts / "train-clean-100"), utterances=8, num_speakers=2, seed=0, workers=1)
    corpus.build_corpus(str(libritts / "dev-clean"), utterances=4, num_speakers=2, seed=1, workers=1)
    pretrained = tmp_path / "CosyVoice2-0.5B"
    pretrained.mkdir()
    (pretrained / "cosyvoice2.yaml").write_text("# stages 0-3 read only the ONNX models\n")
    export_campplus_like(str(pretrained / "campplus.onnx"))
    export_s3_tokenizer(str(pretrained / "speech_tokenizer_v2.onnx"))
    work = tmp_path / "work"
    cmd = [
        "bash", os.path.join(ROOT, "launch/recipes/libritts.sh"), "--stage", "0", "--stop_stage", "3",
        "--corpus", str(libritts), "--work", str(work), "--pretrained_dir", str(pretrained), "--num_workers", "1",
    ]  # fmt: skip
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fitting" not in out.stdout  # the model's own front end was used, no offline stand-ins
    assert str(pretrained / "speech_tokenizer_v2.onnx") in out.stdout + out.stderr
    for subset, n in (("train-clean-100", 8), ("dev-clean", 4)):
        data = work / "data" / subset
        assert len((data / "wav.scp").read_text().splitlines()) == n
        assert (data / "utt2speech_token.npz").exists() and (data / "spk2embedding.npz").exists()
        parquets = (data / "parquet" / "data.list").read_text().splitlines()
        assert len(parquets) == 1 and os.path.exists(parquets[0])


def test_recipe_default_builds_and_prepares_the_builtin_corpus(tmp_path):
    work = tmp_path / "work"
    cmd = ["bash", os.path.join(ROOT, "launch/recipes/libritts.sh"), "--work", str(work), "--hours", "0.004",
           "--speakers", "2", "--codebook_size", "8", "--num_workers", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (work / "offline" / "speaker_encoder.onnx").exists() and (
        work / "offline" / "speech_tokenizer.onnx"
    ).exists()
    for subset in ("train", "dev"):
        parquets = (work / "data" / subset / "parquet" / "data.list").read_text().splitlines()
        assert len(parquets) == 1 and os.path.getsize(parquets[0]) > 0
    assert len((work / "data" / "dev" / "wav.scp").read_text().splitlines()) == 8  # 4 per speaker


def test_recipe_rejects_bad_arguments(tmp_path):
    script = os.path.join(ROOT, "launch/recipes/libritts.sh")
    out = subprocess.run(["bash", script, "--bogus", "1"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr
    out = subprocess.run(["bash", script, "--campplus", str(tmp_path / "none.onnx")], capture_output=True, text=True)
    assert out.returncode == 2 and "none.onnx does not exist" in out.stderr
    bare = tmp_path / "bare"  # a model directory without its speech tokenizer: refused before any stage
    bare.mkdir()
    (bare / "cosyvoice2.yaml").write_text("")
    out = subprocess.run(["bash", script, "--pretrained_dir", str(bare), "--work", str(tmp_path / "w")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "has no speech_tokenizer_v2.onnx: give --speech_tokenizer" in out.stderr
    assert not (tmp_path / "w").exists()
