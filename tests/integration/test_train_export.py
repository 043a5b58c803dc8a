"""Trainer checkpoints -> average -> export: the PyTorch systems load the exported files strictly and match ours.

Checkpoints are written by the trainer's own ``Checkpoints`` (every item of its layout, GAN players included) with
randomly initialised params of the tiny presets' models (``configs/cosyvoice2.py:llm_tiny|flow_tiny|hift_tiny``;
running the trainer itself for three families costs minutes of compilation on CPU, the trainer tests do that).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import parts
from sovits2_jax.convert.cli import convert
from sovits2_jax.convert.mapping import ConversionError, expected_shapes, flatten, unflatten
from sovits2_jax.train import average

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
PRESETS = {"llm": "llm_tiny", "flow": "flow_tiny", "hift": "hift_tiny"}


def _random_params(make_model, seed: int) -> dict:
    """Params of ``make_model()``'s shapes: norm scales near 1, biases and the rest small and random."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_shapes(make_model).items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        if key.endswith("scale"):
            out[key] = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            out[key] = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1)) * (0.1 if len(shape) == 1 else 1.0)
    return unflatten({k: v.astype(np.float32) for k, v in out.items()})


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, write_trainer_steps) -> dict:
    """{part: (workdir, config, {step: {player: params}})} with steps 1 and 2 of each tiny CosyVoice2 family."""
    from sovits2_jax.configs import cosyvoice2 as presets
    from sovits2_jax.train import family as family_lib

    root = tmp_path_factory.mktemp("trained")
    out = {}
    for i, (part, preset) in enumerate(PRESETS.items()):
        config = presets.get_config(preset)
        family = family_lib.get(config.family)
        players = family.players(config)
        steps = {s: {p.name: _random_params(p.make_model, 10 * i + s) for p in players} for s in (1, 2)}
        meta = {**family.export_meta(config), "family": config.family}
        write_trainer_steps(root / part, steps, meta, {1: 2.0, 2: 1.0})
        out[part] = (root / part, config, steps)
    return out


def _player(part: str) -> str:
    return "generator" if part == "hift" else "model"


def test_step_directory_is_a_jax_to_torch_src(trained, tmp_path):
    """``python -m sovits2_jax.convert --src WORKDIR/checkpoints/2 --dst hift.pt`` (its function): the generator
    player only, strictly loadable into cosyvoice's HiFTGenerator with exactly the step's weights."""
    from sovits2_jax.convert import cosyvoice2_hift
    from sovits2_jax.parity.references import hift as parity_hift

    workdir, _, steps = trained["hift"]
    convert(workdir / "checkpoints" / "2", tmp_path / "hift.pt", to="torch")
    state = torch.load(tmp_path / "hift.pt", weights_only=True)
    model_config = parts.load(workdir / "checkpoints" / "2", "hift")[1]
    parity_hift.build_reference(model_config, perturb=False).load_state_dict(state, strict=True)
    expected = dict(cosyvoice2_hift.params_to_torch(steps[2]["generator"], model_config))
    assert sorted(state) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)


def test_averaged_export_is_a_cosyvoice2_model_directory_matching_ours(trained, tmp_path):
    """Average each family's two steps, export one CosyVoice2 directory (the recipe's stage 7): cosyvoice's Qwen2LM,
    CausalMaskedDiffWithXvec and HiFTGenerator load its files strictly and give our outputs (1e-4); the weights
    read back are the numpy mean of the checkpoints."""
    from sovits2_jax import parity
    from sovits2_jax.parity.references import flow as parity_flow
    from sovits2_jax.parity.references import hift as parity_hift
    from sovits2_jax.parity.references import llm as parity_llm

    averaged = {}
    for part, (workdir, _, _) in trained.items():
        averaged[part], chosen = average.average_checkpoints(workdir, 2, "latest", tmp_path / f"avg_{part}")
        assert [d.name for d in chosen] == ["2", "1"]
    model_dir = tmp_path / "CosyVoice2-trained"
    flags = [f"--{part}={path}" for part, path in averaged.items()]
    proc = _run("-m", "sovits2_jax.convert.cosyvoice2_export", *flags, f"--dst={model_dir}")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in model_dir.iterdir()} == {
        "cosyvoice2.yaml",
        "llm.pt",
        "flow.pt",
        "hift.pt",
        "CosyVoice-BlankEN",
    }

    for part, (_, _, steps) in trained.items():
        params, _ = parts.load(model_dir, part)
        flat = flatten(params)
        first, second = flatten(steps[1][_player(part)]), flatten(steps[2][_player(part)])
        assert sorted(flat) == sorted(first)
        for k in flat:
            mean = ((first[k].astype(np.float64) + second[k]) / 2).astype(np.float32)
            np.testing.assert_array_equal(flat[k], mean, err_msg=f"{part} {k}")

    cases = {
        "llm": parity_llm.build(str(model_dir)),  # loads llm.pt strictly into Qwen2LM
        "flow": parity_flow.build(str(model_dir), component="flow", tokens=16),  # strict load_state_dict
        "hift": parity_hift.build(str(model_dir), component="hift", frames=16, batch=1),
    }
    for part, case in cases.items():
        report = parity.compare_outputs(case.run_torch(case.inputs), case.run_jax(case.inputs), case.atol, case.rtol)
        assert case.atol <= 1e-4 and all(r["ok"] for r in report.values()), (part, report)
    hift_config = parts.load(model_dir, "hift")[1]
    state = torch.load(model_dir / "hift.pt", weights_only=True)
    parity_hift.build_reference(hift_config, perturb=False).load_state_dict(state, strict=True)


def test_vits_export_loads_in_gpt_sovits_synthesizer(tmp_path, write_trainer_steps):
    """A GPT-SoVITS v2-layout VITS trainer checkpoint -> s2 .pth that gpt_sovits's SynthesizerTrn loads."""
    import dataclasses

    from flax import nnx

    from sovits2_jax.configs.vits2 import gpt_sovits_v2
    from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
    from sovits2_jax.parity.references import vits as parity_vits

    # GPT-SoVITS's MRTE hard-codes 192 hidden channels; the rest shrunk
    cfg = dataclasses.replace(gpt_sovits_v2(), filter_channels=64, n_layers=2, upsample_initial_channel=64)
    generator = _random_params(lambda: SynthesizerTrn(cfg, rngs=nnx.Rngs(0)), 7)
    meta = {**parts.export_meta("vits", cfg, player="generator"), "family": "vits"}
    write_trainer_steps(tmp_path / "wd", {3: {"generator": generator, "discriminator": {"w": np.ones(3, np.float32)}}},
                        meta)  # fmt: skip
    pth = tmp_path / "s2.pth"
    convert(tmp_path / "wd" / "checkpoints" / "3", pth)  # --to=auto: an Orbax step -> PyTorch
    model, loaded_cfg = parity_vits.load_torch_synthesizer(pth)  # raises unless every non-enc_q key fits
    assert loaded_cfg.filter_channels == 64 and loaded_cfg.version == "v2"
    ours, _ = parts.load(pth, "vits")
    theirs, _ = parts.load(tmp_path / "wd", "vits")  # the workdir: its latest step
    for k, v in flatten(theirs).items():  # the .pth stores float16, as GPT-SoVITS releases do
        np.testing.assert_array_equal(flatten(ours)[k], v.astype(np.float16).astype(np.float32), err_msg=k)
    assert model.enc_p.text_embedding.weight.shape[0] == 732


def test_pretrained_load_on_every_source_kind_and_bad_sources(trained, tmp_path):
    """HF Qwen2 dir, CosyVoice2 model dir, our Orbax dir, trainer step, workdir and average give the same weights;
    anything else is one clear error naming the path."""
    from sovits2_jax.convert import cosyvoice2, hf_qwen2

    workdir, _, steps = trained["llm"]
    step2 = flatten(steps[2]["model"])
    model_dir = tmp_path / "cv2"
    from sovits2_jax.convert.cosyvoice2_export import export_model_dir

    export_model_dir({"llm": workdir / "checkpoints" / "2"}, model_dir)  # HF backbone written as BlankEN
    ours = cosyvoice2.torch_to_jax(model_dir, tmp_path / "ours")
    hf_ours = hf_qwen2.torch_to_jax(model_dir / "CosyVoice-BlankEN", tmp_path / "hf_ours")
    for src in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "2", model_dir, ours, ours / "llm"):
        params, config = parts.load(src, "llm")
        assert config.speech_token_size == trained["llm"][1].model.speech_token_size, src
        assert all(np.array_equal(v, step2[k]) for k, v in flatten(params).items()) and len(flatten(params)) == len(
            step2
        ), src
    for src in (model_dir / "CosyVoice-BlankEN", hf_ours):
        backbone, config = parts.load(src, "llm")  # the backbone only, as CosyVoice's qwen_pretrain_path
        assert sorted(backbone) == ["llm"] and config.backbone.hidden_size == 64
        assert all(np.array_equal(v, step2[f"llm.{k}"]) for k, v in flatten(backbone["llm"]).items())
        qwen2, qconfig = parts.load(src, "qwen2", scan_layers=True)
        assert qconfig.scan_layers and qwen2["model"]["layers"]["mlp"]["up"]["kernel"].shape[0] == 2

    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    bad = [
        (tmp_path / "missing", "llm", "no such file or directory"),
        (tmp_path / "empty", "llm", r"not a checkpoint of a known format \(cosyvoice2: a CosyVoice2 model directory"),
        (tmp_path / "junk.pth", "vits", "hf_qwen2: a HF Qwen2 directory"),
        (trained["flow"][0], "llm", "holds part 'flow'"),
        (model_dir, "vits", "has no part 'vits'"),
    ]
    for src, part, message in bad:
        with pytest.raises(ConversionError, match=message) as err:
            parts.load(src, part)
        assert str(src) in str(err.value)
    with pytest.raises(ConversionError) as err:
        convert(tmp_path / "empty", tmp_path / "x.pt", to="torch")
    assert str(err.value) == f"{tmp_path / 'empty'}: not a sovits2-jax checkpoint (no meta.json)"
    assert ckpt.resolve_checkpoint_dir(workdir) == workdir / "checkpoints" / "2"
