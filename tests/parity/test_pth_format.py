"""GPT-SoVITS s2 .pth <-> Orbax: the {'weight','config','info'} wrapper, version headers, HParams unpickling
without GPT-SoVITS, weight_g/weight_v and parametrized weight-norm keys, fp16, and a .pth that gpt-sovits-infer's
own loader accepts. Small model (hidden 192 is hard-coded in GPT-SoVITS's MRTE; the rest is shrunk)."""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import sys
import types
import typing
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sovits2_jax.convert import gpt_sovits  # noqa: E402
from sovits2_jax.convert.checkpoint import read_meta  # noqa: E402
from sovits2_jax.convert.mapping import ConversionError  # noqa: E402
from sovits2_jax.models.vits2.config import VitsConfig  # noqa: E402
from sovits2_jax.parity.references import vits as parity_vits  # noqa: E402

pytestmark = pytest.mark.parity

SMALL = dict(
    n_fft=64,
    hop_length=16,
    win_length=64,
    n_mel_channels=16,
    inter_channels=16,
    hidden_channels=192,
    filter_channels=64,
    n_heads=2,
    n_layers=2,
    upsample_rates=(4, 4),
    upsample_kernel_sizes=(8, 8),
    upsample_initial_channel=32,
    segment_size=256,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1, 3, 5),),
)


def small_cfg(version="v1") -> VitsConfig:
    n, ref = (322, 33) if version == "v1" else (732, 20)
    return VitsConfig(version=version, n_symbols=n, ref_channels=ref, **SMALL)


def hparams_dict(cfg: VitsConfig) -> dict:
    return {
        "train": {"segment_size": cfg.segment_size, "c_mel": 45, "c_kl": 1.0, "fp16_run": True},
        "data": {
            "sampling_rate": 32000,
            "filter_length": cfg.n_fft,
            "hop_length": cfg.hop_length,
            "win_length": cfg.win_length,
            "n_mel_channels": cfg.n_mel_channels,
            "n_speakers": 300,
        },
        "model": {
            **{k: v for k, v in parity_vits.torch_kwargs(cfg).items() if k not in ("spec_channels", "segment_size")},
            "version": cfg.version,
            "use_spectral_norm": False,
        },
    }


def make_hparams(d: dict):
    """An object pickled as ``utils.HParams`` (how GPT-SoVITS's s2_train saves ``config``)."""
    mod = types.ModuleType("utils")

    class HParams:
        def __init__(self, **kw):
            for k, v in kw.items():
                setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    mod.HParams = HParams
    return mod, HParams(**d)


def write_release_pth(path, cfg, *, header=None, half=True, parametrized=False, seed=0):
    """A .pth laid out as GPT-SoVITS writes it (process_ckpt.savee): enc_q dropped, fp16, HParams config."""
    model = parity_vits.make_torch_reference(cfg, seed)
    weight = {k: (v.half() if half else v.clone()) for k, v in model.state_dict().items() if not k.startswith("enc_q")}
    if parametrized:
        weight = {
            k.replace(".weight_g", ".parametrizations.weight.original0").replace(
                ".weight_v", ".parametrizations.weight.original1"
            ): v
            for k, v in weight.items()
        }
    mod, hps = make_hparams(hparams_dict(cfg))
    sys.modules["utils"] = mod
    try:
        gpt_sovits.save_pth({"weight": weight, "config": hps, "info": "12epoch_345iteration"}, path, header)
    finally:
        del sys.modules["utils"]  # readers must not need GPT-SoVITS's utils module
    return weight


def assert_same_pth(a, b):
    obj_a, head_a = gpt_sovits.load_pth(a)
    obj_b, head_b = gpt_sovits.load_pth(b)
    assert head_a == head_b
    assert obj_a["info"] == obj_b["info"] and obj_a["config"] == obj_b["config"]
    wa, wb = obj_a["weight"], obj_b["weight"]
    assert list(wa) == list(wb)
    for k in wa:
        assert wa[k].dtype == wb[k].dtype, k
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("header", [None, b"03", b"04", b"05", b"06"])
def test_round_trip_is_bit_exact_with_version_headers(tmp_path, header):
    src, dst = tmp_path / "s2.pth", tmp_path / "back.pth"
    write_release_pth(src, small_cfg(), header=header)
    with open(src, "rb") as f:
        assert f.read(2) == (header or b"PK")
    gpt_sovits.torch_to_jax(src, tmp_path / "ckpt")
    meta = read_meta(tmp_path / "ckpt")
    assert meta["format"] == "gpt_sovits" and meta["torch"]["header"] == (header.decode() if header else None)
    gpt_sovits.jax_to_torch(tmp_path / "ckpt", dst)
    assert_same_pth(src, dst)


def test_fp32_and_parametrized_weight_norm_keys_round_trip(tmp_path):
    src, dst = tmp_path / "s2.pth", tmp_path / "back.pth"
    weight = write_release_pth(src, small_cfg(), half=False, parametrized=True)
    assert any(".parametrizations.weight.original0" in k for k in weight)
    gpt_sovits.torch_to_jax(src, tmp_path / "ckpt")
    gpt_sovits.jax_to_torch(tmp_path / "ckpt", dst)
    assert_same_pth(src, dst)


def test_hparams_become_config_and_versions_are_told_apart(tmp_path):
    for version in ("v1", "v2"):
        cfg = small_cfg(version)
        write_release_pth(tmp_path / f"{version}.pth", cfg)
        obj, _ = gpt_sovits.load_pth(tmp_path / f"{version}.pth")
        assert obj["config"]["model"]["filter_channels"] == 64  # HParams unpickled into plain data
        got = gpt_sovits.config_from_pth(obj["config"], gpt_sovits.normalize_dict(obj["weight"]))
        assert got.version == version and got.n_symbols == cfg.n_symbols and got.ref_channels == cfg.ref_channels
        assert not got.with_posterior  # release files carry no enc_q
        assert got == cfg.replace(with_posterior=False)


def test_converted_weights_equal_the_fp16_values(tmp_path):
    import jax.numpy as jnp
    from flax import nnx

    from sovits2_jax.convert.checkpoint import load_checkpoint
    from sovits2_jax.convert.mapping import flatten

    cfg = small_cfg()
    weight = write_release_pth(tmp_path / "s2.pth", cfg)
    gpt_sovits.torch_to_jax(tmp_path / "s2.pth", tmp_path / "ckpt")
    params, meta = load_checkpoint(tmp_path / "ckpt")
    flat = flatten(params)
    np.testing.assert_array_equal(flat["enc_p.text_embedding.embedding"], weight["enc_p.text_embedding.weight"].float())
    np.testing.assert_array_equal(flat["dec.ups.0.g"], weight["dec.ups.0.weight_g"].float().reshape(-1))
    np.testing.assert_array_equal(
        flat["flow.flows.1.post.kernel"][0].T, weight["flow.flows.2.post.weight"].float()[..., 0]
    )
    # and the checkpoint builds a working model
    ccfg = VitsConfig.from_dict(meta["config"])
    graphdef, state = gpt_sovits.params_from_flat(ccfg, flat)
    wav = nnx.merge(graphdef, state).decode(
        jnp.zeros((1, 1, 3), jnp.int32), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 9, 33)), 0.0
    )
    assert wav.shape == (1, 6 * cfg.hop_length) and np.isfinite(np.asarray(wav)).all()


def _stub(name):
    m = mock.MagicMock(name=name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return m


def test_gpt_sovits_infer_loads_our_pth(tmp_path):
    """gpt-sovits-infer's GPTSoVITSInference.load_sovits (weights-only torch.load, DictToAttrRecursive config)."""
    cfg = small_cfg()
    write_release_pth(tmp_path / "s2.pth", cfg, seed=4)
    gpt_sovits.torch_to_jax(tmp_path / "s2.pth", tmp_path / "ckpt")
    gpt_sovits.jax_to_torch(tmp_path / "ckpt", tmp_path / "ours.pth")
    stubs = [
        "LangSegment",
        "cn2an",
        "pypinyin",
        "pypinyin.constants",
        "jieba_fast",
        "jieba_fast.posseg",
        "pyopenjtalk",
        "wordsegment",
        "g2p_en",
        "g2p_en.expand",
        "nltk",
        "nltk.tokenize",
    ]
    # only its text frontend's packages are missing here; the loader itself runs for real
    added = {n: _stub(n) for n in stubs if importlib.util.find_spec(n.split(".")[0]) is None and n not in sys.modules}
    sys.modules.update(added)
    try:
        with mock.patch.multiple(builtins, create=True, Tuple=tuple, Optional=typing.Optional, List=list):
            from sovits2_jax.parity.torch_refs import import_gpt_sovits

            inference = import_gpt_sovits("gpt_sovits.infer.inference")
            runner = object.__new__(inference.GPTSoVITSInference)
            runner.device, runner.is_half = "cpu", False
            runner.load_sovits(str(tmp_path / "ours.pth"))
    finally:
        for n in added:
            sys.modules.pop(n, None)
    loaded = runner.vq_model.state_dict()
    obj, _ = gpt_sovits.load_pth(tmp_path / "s2.pth")
    assert set(obj["weight"]) == set(loaded)
    for k, v in obj["weight"].items():
        assert torch.equal(loaded[k], v.float()), k
    assert runner.hps.data.hop_length == cfg.hop_length


def test_bad_files_raise_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"XYnot a checkpoint")
    with pytest.raises(ConversionError, match=r"junk\.pth"):
        gpt_sovits.load_pth(junk)
    assert not gpt_sovits.detect(junk)
    cfg = small_cfg()
    write_release_pth(tmp_path / "s2.pth", cfg, header=b"05")
    assert gpt_sovits.detect(tmp_path / "s2.pth")
    obj, _ = gpt_sovits.load_pth(tmp_path / "s2.pth")
    weight = dict(obj["weight"])
    weight.pop("dec.conv_post.weight")
    weight["dec.extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"dec\.conv_post\.weight.*\n.*dec\.extra\.weight"):
        gpt_sovits.torch_items_to_flat(weight.items(), cfg.replace(with_posterior=False))


def test_parity_component_on_a_release_style_file(tmp_path):
    """``convert/parity.py --component vits --src x.pth``: fp16 weights, a v2 header, v2 704-bin-style reference."""
    from sovits2_jax.parity.compare import compare_outputs

    write_release_pth(tmp_path / "s2.pth", small_cfg("v2"), header=b"05", seed=2)
    case = parity_vits.build(str(tmp_path / "s2.pth"), component="vits")
    assert case.info["version"] == "v2" and case.info["ref_channels"] == 20
    report = compare_outputs(case.run_torch(case.inputs), case.run_jax(case.inputs), case.atol, case.rtol)
    assert report["wav"]["ok"] and report["wav"]["ref_max_abs"] > 1e-3, report


def test_sovits2_layout_has_no_pth_equivalent(tmp_path):
    from sovits2_jax.convert.checkpoint import save_checkpoint

    save_checkpoint(
        tmp_path / "ck",
        {"x": np.zeros(1)},
        {
            "format": "gpt_sovits",
            "config": VitsConfig(version="sovits2", content="tokens", flow="transformer", position="rope").to_dict(),
        },
    )
    with pytest.raises(ConversionError, match="no GPT-SoVITS SynthesizerTrn equivalent"):
        gpt_sovits.jax_to_torch(tmp_path / "ck", tmp_path / "x.pth")
