"""hift.pt <-> our params: bit-exact round trips for both weight-norm key styles, the HiFiGan ``generator.`` /
``discriminator.`` layout, strict error messages, the yaml config, and torch-file / Orbax storage."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sovits2_jax.convert import cosyvoice2_hift
from sovits2_jax.convert.mapping import ConversionError
from sovits2_jax.models.hift import HiFTConfig
from sovits2_jax.parity.references import hift as parity_hift

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

CONFIG = parity_hift.reference_config("real")

HIFT_YAML = parity_hift.hift_yaml()


@pytest.fixture(scope="module")
def state_dict():
    ref = parity_hift.build_reference(CONFIG, seed=3)
    return {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}


def _legacy(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        out[k.replace(".parametrizations.weight.original1", ".weight_v")] = v
    return out


def _assert_same(got: dict, want: dict):
    assert list(got) == list(want) or set(got) == set(want), sorted(set(got) ^ set(want))[:10]
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_round_trip_is_bit_exact_in_the_current_key_style(state_dict):
    assert any(k.endswith("parametrizations.weight.original0") for k in state_dict)
    params = cosyvoice2_hift.torch_to_params(state_dict.items(), CONFIG)
    assert "discriminator" not in params
    assert params["ups"][0]["g"].shape == (512,)  # ConvTranspose1d: g over input channels
    assert params["ups"][0]["layer"]["kernel"].shape == (16, 512, 256)
    _assert_same(dict(cosyvoice2_hift.params_to_torch(params, CONFIG)), state_dict)


def test_round_trip_of_legacy_weight_g_v_keys(state_dict):
    legacy = _legacy(state_dict)
    assert cosyvoice2_hift.detect_weight_norm_style(legacy) == "legacy"
    params = cosyvoice2_hift.torch_to_params(legacy.items(), CONFIG)
    _assert_same(dict(cosyvoice2_hift.params_to_torch(params, CONFIG, style="legacy")), legacy)
    # Either style reads into the same params.
    params_new = cosyvoice2_hift.torch_to_params(state_dict.items(), CONFIG)
    _assert_same(dict(cosyvoice2_hift.params_to_torch(params, CONFIG)), state_dict)
    assert params_new.keys() == params.keys()


def test_hifigan_checkpoint_with_prefix_discriminator_and_counters(state_dict):
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    import_cosyvoice("matcha.hifigan.models")
    if "torchaudio.transforms" not in sys.modules:
        stub = types.ModuleType("torchaudio.transforms")
        stub.Spectrogram = None
        sys.modules["torchaudio.transforms"] = stub
    from cosyvoice.hifigan.discriminator import MultipleDiscriminator, MultiResSpecDiscriminator
    from matcha.hifigan.models import MultiPeriodDiscriminator

    torch.manual_seed(0)
    disc = MultipleDiscriminator(MultiPeriodDiscriminator(), MultiResSpecDiscriminator())
    checkpoint = {f"generator.{k}": v for k, v in state_dict.items()}
    checkpoint.update({f"discriminator.{k}": v.detach().numpy().copy() for k, v in disc.state_dict().items()})
    # matcha's MPD uses the legacy hook, cosyvoice's spectrogram discriminator the parametrizations.
    assert any(".mpd." in k and k.endswith("weight_g") for k in checkpoint)
    assert any(".mrd." in k and k.endswith("original0") for k in checkpoint)
    items = [*checkpoint.items(), ("epoch", np.asarray(3)), ("step", np.asarray(1200))]
    params = cosyvoice2_hift.torch_to_params(items, CONFIG)
    assert set(params["discriminator"]) == {"mpd", "mrd"}
    _assert_same(dict(cosyvoice2_hift.params_to_torch(params, CONFIG)), checkpoint)
    # Without the discriminator the same generator params give a plain hift.pt.
    params.pop("discriminator")
    _assert_same(dict(cosyvoice2_hift.params_to_torch(params, CONFIG)), state_dict)


def test_strict_errors_name_every_bad_key(state_dict):
    broken = dict(state_dict)
    broken.pop("conv_pre.bias")
    broken["resblocks.0.extra.weight"] = np.zeros(3, np.float32)
    broken["conv_post.parametrizations.weight.original0"] = np.zeros((5, 1, 1), np.float32)
    with pytest.raises(ConversionError) as err:
        cosyvoice2_hift.torch_to_params(broken.items(), CONFIG)
    message = str(err.value)
    for key in ("conv_pre.bias", "resblocks.0.extra.weight", "conv_post.parametrizations.weight.original0"):
        assert key in message
    with pytest.raises(ConversionError, match="ups"):  # a checkpoint of another size
        cosyvoice2_hift.torch_to_params(state_dict.items(), parity_hift.reference_config("tiny"))


def test_config_from_cosyvoice2_yaml():
    from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml

    parsed = load_hyperpyyaml(HIFT_YAML)
    assert cosyvoice2_hift.config_from_yaml(parsed) == cosyvoice2_hift.default_config() == HiFTConfig()
    small = load_hyperpyyaml(HIFT_YAML.replace("base_channels: 512", "base_channels: 64"))
    assert cosyvoice2_hift.config_from_yaml(small["hift"]).base_channels == 64
    with pytest.raises(ValueError, match="HiFTGenerator"):
        cosyvoice2_hift.config_from_yaml({"hift": {"__class__": "cosyvoice.hifigan.generator.Other"}})


def test_torch_file_and_orbax_storage_round_trip(state_dict, tmp_path):
    from sovits2_jax.convert.checkpoint import load_checkpoint, save_checkpoint
    from sovits2_jax.convert.torch_io import iter_torch_file, save_torch_state_dict

    torch.save({k: torch.from_numpy(v) for k, v in _legacy(state_dict).items()}, tmp_path / "hift.pt")
    params = cosyvoice2_hift.torch_to_params(iter_torch_file(tmp_path / "hift.pt"), CONFIG)
    save_checkpoint(tmp_path / "hift", params, {"format": "cosyvoice2.hift", "config": CONFIG.to_dict()})
    loaded, meta = load_checkpoint(tmp_path / "hift")
    assert HiFTConfig.from_dict(meta["config"]) == CONFIG
    save_torch_state_dict(cosyvoice2_hift.params_to_torch(loaded, CONFIG), tmp_path / "back.pt")
    back = {k: v.numpy() for k, v in torch.load(tmp_path / "back.pt", weights_only=True).items()}
    _assert_same(back, state_dict)


def test_cosyvoice2_directory_round_trip_with_only_hift(state_dict, tmp_path):
    from sovits2_jax.convert import cosyvoice2

    src = tmp_path / "CosyVoice2-0.5B"
    src.mkdir()
    (src / "cosyvoice2.yaml").write_text(HIFT_YAML)
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, src / "hift.pt")
    cosyvoice2.torch_to_jax(src, tmp_path / "jax")
    params, config = cosyvoice2.load_part(tmp_path / "jax", "hift")
    assert config == CONFIG and params["conv_post"]["g"].shape == (18,)
    cosyvoice2.jax_to_torch(tmp_path / "jax", tmp_path / "back")
    back = {k: v.numpy() for k, v in torch.load(tmp_path / "back" / "hift.pt", weights_only=True).items()}
    _assert_same(back, state_dict)


def test_configs_hift_matches_the_model_defaults():
    from sovits2_jax.train.validate import validate
    from sovits2_jax.validation import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "cosyvoice2.py"
    config = load_config(f"{path}:hift")
    validate(config, num_devices=1)
    assert HiFTConfig.from_dict(config.model.to_dict()) == HiFTConfig()
    tiny = HiFTConfig.from_dict(load_config(f"{path}:hift_tiny").model.to_dict())
    assert tiny.upsample_scale == 480 and tiny.base_channels < 512
