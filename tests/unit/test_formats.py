"""Checkpoint formats: every discovered format module implements the protocol (``convert/formats.py``), a format in
a new module is found without being listed anywhere, and ``parts.load`` reads each kind of source through the one
format that detects it, giving what the converters give; a bad source is one error line naming it."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sovits2_jax import convert
from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import formats, parts
from sovits2_jax.convert.mapping import ConversionError, flatten

PROTOCOL = ("detect", "parts", "load_part", "torch_to_jax", "jax_to_torch")
PART_HOOKS = ("build_model", "checkpoint_format")


def _assert_same(params: dict, expected: dict) -> None:
    a, b = flatten(params), flatten(expected)
    assert sorted(a) == sorted(b)
    for k, v in b.items():
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(v), err_msg=k)


def test_every_discovered_format_implements_the_protocol():
    mods = formats.available_formats()
    names = [m.NAME for m in mods]
    assert {"cosyvoice2", "gpt_sovits", "hf_qwen2", "orbax"} <= set(names)
    assert len(set(names)) == len(names)
    for mod in mods:
        assert isinstance(mod.NAME, str) and isinstance(mod.DESCRIPTION, str) and mod.DESCRIPTION, mod.__name__
        assert isinstance(mod.PARTS, tuple) and all(isinstance(p, str) for p in mod.PARTS), mod.__name__
        for fn in PROTOCOL + (PART_HOOKS if mod.PARTS else ()):
            assert callable(getattr(mod, fn, None)), f"{mod.__name__} lacks {fn}"
        for part in mod.PARTS:
            name = mod.checkpoint_format(part)
            assert name is None or name.partition(".")[0] == mod.NAME, (mod.NAME, part, name)
    assert set(formats.known_parts()) == {"qwen2", "llm", "flow", "hift", "vits", "xlm_roberta", "hubert"}
    # every part a trainer can export has exactly one writer, and export_meta names it
    for part in ("qwen2", "llm", "flow", "hift", "vits"):
        writers = [m.checkpoint_format(part) for m in mods if part in m.PARTS and m.checkpoint_format(part)]
        assert len(writers) == 1, (part, writers)


TOY_FORMAT = '''
"""A format that lives outside sovits2_jax/convert: ``<name>.toy`` files holding one ``toy`` part."""
from pathlib import Path

import numpy as np

from sovits2_jax.convert.mapping import ConversionError

NAME = "toyfmt"
DESCRIPTION = "a .toy file"
PARTS = ("toy",)


def detect(src):
    return Path(src).is_file() and Path(src).suffix == ".toy"


def parts(src):
    return PARTS


def load_part(src, part):
    if part not in PARTS:
        raise ConversionError(f"{src}: a .toy file holds no {part!r}")
    return {"w": np.load(src, allow_pickle=False)}, {"kind": "toy"}


def build_model(part, config, rngs):
    return ("toy model", config)


def checkpoint_format(part):
    return NAME if part in PARTS else None


def torch_to_jax(src, dst):
    raise ConversionError("no torch side")


def jax_to_torch(src, dst):
    raise ConversionError("no torch side")
'''


@pytest.fixture
def toy_format(tmp_path, monkeypatch):
    """``sovits2_jax.convert.toyfmt`` from a module file in a directory added to the package's path (formats.py is
    not touched; a fixed list of formats would not see it)."""
    extra = tmp_path / "more_formats"
    extra.mkdir()
    (extra / "toyfmt.py").write_text(textwrap.dedent(TOY_FORMAT))
    (extra / "not_a_format.py").write_text("NAME = 'nope'\n")  # no detect: not a format
    importlib.invalidate_caches()
    monkeypatch.setattr(convert, "__path__", [*convert.__path__, str(extra)])
    yield
    for name in ("sovits2_jax.convert.toyfmt", "sovits2_jax.convert.not_a_format"):
        sys.modules.pop(name, None)


def test_a_format_in_a_new_module_is_discovered(toy_format, tmp_path):
    names = [m.NAME for m in formats.available_formats()]
    assert "toyfmt" in names and "nope" not in names
    assert "toy" in formats.known_parts()
    src = tmp_path / "weights.toy"
    with open(src, "wb") as f:
        np.save(f, np.arange(6, dtype=np.float32))
    assert formats.detect_format(src).NAME == "toyfmt"
    params, config = parts.load(src, "toy")
    np.testing.assert_array_equal(params["w"], np.arange(6, dtype=np.float32))
    assert config == {"kind": "toy"}
    assert parts.held_parts(src) == ("toy",)
    assert parts.build_module("toy", config) == ("toy model", config)

    class Config:
        def to_dict(self):
            return {"kind": "toy"}

    assert parts.export_meta("toy", Config())["format"] == "toyfmt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"toyfmt: a \.toy file"):  # the error lists the new format too
        parts.load(tmp_path / "empty", "toy")


def test_without_the_module_there_is_no_such_format(tmp_path):
    assert "toyfmt" not in [m.NAME for m in formats.available_formats()]
    with pytest.raises(ConversionError, match="unknown part 'toy'"):
        parts.load(tmp_path, "toy")


# --------------------------------------------------------------------------------------------- each kind of source
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random transformers Qwen2ForCausalLM written with save_pretrained (untied lm_head)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sovits2_jax.parity.random_reference import save_random_hf_qwen2
    from sovits2_jax.parity.references import qwen2 as parity_qwen2

    return save_random_hf_qwen2(tmp_path_factory.mktemp("hf") / "qwen2", parity_qwen2.TINY, seed=3)


def test_hf_qwen2_directory_and_its_conversion(hf_dir, tmp_path):
    from sovits2_jax.convert import hf_qwen2
    from sovits2_jax.models.speech_lm import SpeechLMConfig

    assert formats.detect_format(hf_dir) is hf_qwen2 and parts.held_parts(hf_dir) == ("qwen2", "llm")
    params, config = parts.load(hf_dir, "qwen2")
    # the weights are transformers' own (independently of the rule table: embedding as is, linears transposed)
    from safetensors.numpy import load_file

    state = load_file(hf_dir / "model.safetensors")
    np.testing.assert_array_equal(params["model"]["embed_tokens"]["embedding"], state["model.embed_tokens.weight"])
    np.testing.assert_array_equal(params["lm_head"]["kernel"], state["lm_head.weight"].T)
    np.testing.assert_array_equal(
        params["model"]["layers"][1]["attention"]["query"]["kernel"], state["model.layers.1.self_attn.q_proj.weight"].T
    )
    # the converter's output read back directly, and through parts.load (the orbax format, by its meta.json)
    dst = hf_qwen2.torch_to_jax(hf_dir, tmp_path / "ours")
    direct, meta = ckpt.load_checkpoint(dst)
    _assert_same(params, direct)
    assert config.to_dict() == meta["config"]
    assert formats.detect_format(dst).NAME == "orbax" and parts.held_parts(dst) == ("qwen2", "llm")
    again, config2 = parts.load(dst, "qwen2")
    _assert_same(again, direct)
    assert config2 == config
    # llm: the backbone only, as CosyVoice's qwen_pretrain_path (untied: the lm_head too)
    for src in (hf_dir, dst):
        llm, llm_config = parts.load(src, "llm")
        assert isinstance(llm_config, SpeechLMConfig) and llm_config.backbone == config
        _assert_same(llm, {"llm": {"model": direct["model"], "lm_head": direct["lm_head"]}})
    scanned, scfg = parts.load(dst, "qwen2", scan_layers=True)
    assert scfg.scan_layers and scanned["model"]["layers"]["mlp"]["up"]["kernel"].shape[0] == config.num_layers
    with pytest.raises(ConversionError, match="holds no 'flow' part") as err:
        parts.load(hf_dir, "flow")
    assert str(hf_dir) in str(err.value)


def test_orbax_part_checkpoint_of_ours(tmp_path):
    """A one-part checkpoint (``cosyvoice2.<part>``, as converted or averaged): params and config from meta.json."""
    from sovits2_jax.convert import cosyvoice2
    from sovits2_jax.models.hift import HiFTConfig

    rng = np.random.default_rng(0)
    params = {"conv_pre": {"kernel": rng.normal(size=(3, 4, 5)).astype(np.float32)},
              "ups": {0: {"bias": rng.normal(size=(7,)).astype(np.float32)}}}  # fmt: skip
    config = HiFTConfig(base_channels=32)
    src = ckpt.save_checkpoint(tmp_path / "hift", params, {"format": "cosyvoice2.hift", "config": config.to_dict()})
    assert formats.detect_format(src).NAME == "orbax" and parts.held_parts(src) == ("hift",)
    loaded, loaded_config = parts.load(src, "hift")
    old_params, old_config = cosyvoice2.PartFormat("hift").load(src)  # the reader parts.load used before
    _assert_same(loaded, old_params)
    _assert_same(loaded, params)
    assert loaded_config == old_config == config
    assert formats.format_of_checkpoint(src).NAME == "cosyvoice2.hift"
    with pytest.raises(ConversionError, match=r"holds part 'hift' \(cosyvoice2\.hift\), not 'flow'"):
        parts.load(src, "flow")


def test_trainer_workdir_step_and_meta(tmp_path, write_trainer_steps):
    """A trainer workdir (meta.json from ``export_meta`` in the step's ``meta`` item, several players): the
    exported player of the latest step, as ``load_checkpoint`` reads it."""
    from sovits2_jax.models.flow.config import FlowConfig

    rng = np.random.default_rng(1)

    def players(step):
        return {"model": {"estimator": {"w": np.full((2, 3), float(step), np.float32)},
                          "bias": rng.normal(size=(4,)).astype(np.float32)},
                "discriminator": {"w": np.ones((5,), np.float32)}}  # fmt: skip

    steps = {1: players(1), 2: players(2)}
    meta = parts.export_meta("flow", FlowConfig(), player="model")
    assert meta["format"] == "cosyvoice2.flow" and meta["part"] == "flow"
    write_trainer_steps(tmp_path / "wd", steps, meta)
    step2 = tmp_path / "wd" / "checkpoints" / "2"
    direct, _ = ckpt.load_checkpoint(step2)
    for src in (tmp_path / "wd", tmp_path / "wd" / "checkpoints", step2):
        assert formats.detect_format(src).NAME == "orbax" and parts.held_parts(src) == ("flow",), src
        params, config = parts.load(src, "flow")
        _assert_same(params, direct)
        _assert_same(params, steps[2]["model"])
        assert config == FlowConfig()
    with pytest.raises(ConversionError, match="holds part 'flow'") as err:
        parts.load(tmp_path / "wd", "llm")
    assert str(tmp_path / "wd") in str(err.value)


def test_bad_sources_give_one_error_line_naming_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "unknown").mkdir()
    ckpt.save_checkpoint(tmp_path / "unknown" / "x", {"w": np.zeros(2, np.float32)}, {"format": "bigram"})
    (tmp_path / "cv2").mkdir()
    (tmp_path / "cv2" / "cosyvoice2.yaml").write_text("sample_rate: 24000\n")
    (tmp_path / "cv2" / "flow.pt").write_bytes(b"a state dict")
    bad = [
        (tmp_path / "cv2" / "flow.pt", "flow", "give the model directory that holds flow.pt"),
        (tmp_path / "missing", "llm", "no such file or directory"),
        (tmp_path / "empty", "llm", "not a checkpoint of a known format"),
        (tmp_path / "junk.pth", "vits", "not a checkpoint of a known format"),
        (tmp_path / "unknown" / "x", "llm", "unknown checkpoint format 'bigram'"),
        (tmp_path / "cv2", "hift", "CosyVoice2 model directory without hift.pt"),
        (tmp_path / "cv2", "vits", "has no part 'vits'"),
    ]
    for src, part, message in bad:
        with pytest.raises(ConversionError, match=message) as err:
            parts.load(src, part)
        text = str(err.value)
        assert str(src) in text and "\n" not in text, text
    with pytest.raises(ConversionError) as err:
        parts.load(tmp_path / "empty", "llm")
    msg = str(err.value)
    for mod in formats.available_formats():  # every format says what its sources look like
        assert f"{mod.NAME}: {mod.DESCRIPTION}" in msg
    with pytest.raises(ConversionError, match="unknown part 'nope'"):
        parts.load(tmp_path / "empty", "nope")


def test_module_of_each_part_fits_what_load_returns(tmp_path):
    """``parts.build_module`` is the model whose params ``parts.load`` returns (here a small hift)."""
    from flax import nnx

    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator
    from sovits2_jax.parallel.sharding import split_params

    config = HiFTConfig(base_channels=16, f0_cond_channels=16)
    module = parts.build_module("hift", config, nnx.Rngs(1))
    assert isinstance(module, HiFTGenerator)
    params = nnx.to_pure_dict(split_params(module)[1])
    meta = parts.export_meta("hift", config, player="generator")  # as the hift family's trainer writes it
    src = ckpt.save_checkpoint(tmp_path / "hift", {"generator": params, "discriminator": {"w": np.ones(2)}}, meta)
    loaded, loaded_config = parts.load(src, "hift")
    assert loaded_config == config
    _, state = params_from_flat(lambda: parts.build_module("hift", loaded_config), flatten(loaded))
    _assert_same(nnx.to_pure_dict(state), params)


def test_paths_are_resolved_before_detection(tmp_path):
    """A trainer workdir without a finished step is nobody's source."""
    (tmp_path / "wd" / "checkpoints").mkdir(parents=True)
    assert ckpt.resolve_checkpoint_dir(tmp_path / "wd") == Path(tmp_path / "wd")
    with pytest.raises(ConversionError, match="not a checkpoint of a known format"):
        parts.load(tmp_path / "wd", "flow")
