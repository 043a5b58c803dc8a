"""Config files, command-line overrides (absl config_flags, locked) and validation errors naming the key."""

import json
import subprocess
import sys

import pytest

from sovits2_jax.train.validate import validate
from sovits2_jax.validation import ConfigError, load_config


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "sovits2_jax.show_config", *args], capture_output=True, text=True, timeout=120
    )


def test_override_from_command_line():
    out = run_cli("--config=configs/qwen2.py:tiny", "--config.model.num_layers=3", "--config.mesh.fsdp=2")
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["model"]["num_layers"] == 3
    assert config["model"]["hidden_size"] == 64  # untouched values keep the file's
    assert config["mesh"]["fsdp"] == 2 and config["mesh"]["data"] == -1


def test_unknown_key_is_rejected():
    out = run_cli("--config=configs/qwen2.py:tiny", "--config.model.num_layerz=3")
    assert out.returncode != 0
    assert "num_layerz" in out.stderr


def test_validation_error_from_command_line_names_key():
    out = run_cli("--config=configs/qwen2.py:tiny", "--config.model.num_heads=5")
    assert out.returncode == 1
    assert "config.model.num_heads=5" in out.stderr and "hidden_size" in out.stderr


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("model.num_heads", 6, "config.model.num_heads=6 does not divide config.model.hidden_size"),
        ("model.num_kv_heads", 3, "config.model.num_kv_heads=3 does not divide config.model.num_heads"),
        ("model.remat_policy", "sometimes", "config.model.remat_policy"),
        ("model.attention_impl", "flash", "config.model.attention_impl"),
        ("model.dtype", "float8", "config.model.dtype"),
        ("mesh.data", 3, "config.mesh"),
        ("mesh.tensor", 0, "config.mesh.tensor=0"),
        ("train.batch_size", 3, "config.train.batch_size=3 is not divisible"),
    ],
)
def test_validation_rejects(key, value, needle):
    config = load_config("configs/qwen2.py:tiny")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        validate(config, num_devices=8)


def test_mesh_must_fit_device_count():
    config = load_config("configs/qwen2.py:tiny")
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    validate(config, num_devices=8)
    with pytest.raises(ConfigError, match="does not match the 4 available devices"):
        validate(config, num_devices=4)
    config.mesh.data = -1
    config.mesh.fsdp = -1
    with pytest.raises(ConfigError, match="only one mesh axis may be -1"):
        validate(config, num_devices=8)


def test_every_size_validates():
    for size in ("tiny", "50m", "100m", "0.5b"):
        validate(load_config(f"configs/qwen2.py:{size}"), num_devices=8)


def test_data_section_is_validated():
    config = load_config("configs/data.py:llm")
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    config.data.max_frames_in_batch = 4000  # two data-parallel devices need two rows of the longest bucket
    config.data.batch_multiple = 2
    validate(config, num_devices=2)
    config.data.batch_multiple = 3
    with pytest.raises(ConfigError, match=r"config\.data\.batch_multiple=3"):
        validate(config, num_devices=2)
    config.data.batch_multiple = 2
    config.data.kind = "video"
    with pytest.raises(ConfigError, match=r"config\.data\.kind='video'"):
        validate(config, num_devices=2)


@pytest.mark.parametrize("spec,part", [("configs/cosyvoice2.py:llm", "llm"), ("configs/gpt_sovits2.py:ar", "ar")])
def test_speech_lm_backbone_is_validated(spec, part):
    config = load_config(spec)
    validate(config, num_devices=8)
    config[part].model.backbone.num_kv_heads = 5
    with pytest.raises(ConfigError, match=rf"config\.{part}\.model\.backbone\.num_kv_heads=5"):
        validate(config, num_devices=8)


def test_hift_model_is_validated():
    config = load_config("configs/cosyvoice2.py:hift")
    validate(config, num_devices=8)
    config.hift.model.sampling_rate = 22050
    with pytest.raises(ConfigError, match=r"config\.hift\.model"):
        validate(config, num_devices=8)


@pytest.mark.parametrize(
    "spec", ["configs/cosyvoice2.py:flow", "configs/cosyvoice2.py:flow_tiny", "configs/flow.py:real"]
)
def test_flow_model_is_validated(spec):
    """A training config's flow section is checked by its family; a model-only config (configs/flow.py, no family)
    by the flow model's own validator, which the family calls."""
    from sovits2_jax.models.flow import config as flow_config

    config = load_config(spec)
    validate(config, num_devices=8)
    model = config.flow.model if "flow" in config else config.model
    model.estimator.in_channels = 300
    check = (lambda: validate(config, num_devices=8)) if "family" in config else (lambda: flow_config.validate(model))
    with pytest.raises(ConfigError, match=r"config\.(flow\.)?model: estimator\.in_channels=300"):
        check()


# Every documented ARG of every configs/*.py; each must appear in its file's docstring.
CONFIG_ARGS = {
    "qwen2.py": ["tiny", "small", "50m", "100m", "0.5b", "release"],
    "cosyvoice2.py": [f"{part}{size}" for part in ("llm", "flow", "hift") for size in ("", "_tiny", "_small")],
    "flow.py": ["real", "tiny", "small", "release"],
    "hift.py": ["", "tiny", "small"],
    "gpt_sovits2.py": ["ar", "ar_tiny", "ar_small"],
    "vits2.py": ["", "v1", "v2", "sovits2", "small", "tiny", "release"],
    "data.py": ["llm", "flow", "hift", "gpt_sovits2"],
}


def _model_sections(config):
    """(where, section, dataclass) for every model / sampling section of a loaded config."""
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.models.flow.config import FlowConfig
    from sovits2_jax.models.hift import HiFTConfig
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.models.speech_lm import SpeechLMConfig
    from sovits2_jax.models.vits2.config import VitsConfig

    model_type, part = config.get("model_type"), config.get("part")
    if model_type == "qwen2":
        yield "model", config.model, Qwen2Config
    if model_type == "flow":
        yield "model", config.model, FlowConfig
    if model_type == "vits2":
        yield "vits.model", config.vits.model, VitsConfig
    if part in ("llm", "ar"):
        yield f"{part}.model", config[part].model, SpeechLMConfig
        yield f"{part}.sampling", config[part].sampling, SamplingConfig
    if part == "flow":
        yield "flow.model", config.flow.model, FlowConfig
    if part == "hift":
        yield "hift.model", config.hift.model, HiFTConfig


@pytest.mark.parametrize("name,arg", [(name, arg) for name, args in CONFIG_ARGS.items() for arg in args])
def test_every_config_arg_loads_validates_and_round_trips(name, arg):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / name
    assert arg in path.read_text().split('"""')[1], f"{name}:{arg} is not documented in the file's docstring"
    config = load_config(f"{path}:{arg}" if arg else str(path))
    validate(config, num_devices=1)
    sections = list(_model_sections(config))
    assert sections or name == "data.py"
    for where, section, cls in sections:
        obj = cls.from_dict(section.to_dict())
        assert cls.from_dict(obj.to_dict()) == obj, where
        assert cls.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj, where  # tuples back from JSON lists
        bad = obj.to_dict()
        bad["bogus_key"] = 1
        with pytest.raises(ValueError, match=r"unknown .*bogus_key"):
            cls.from_dict(bad)
        for key, value in obj.to_dict().items():  # nested configs (flow encoder, speech-LM backbone) too
            if isinstance(value, dict):
                bad = obj.to_dict()
                bad[key]["nested_bogus"] = 1
                with pytest.raises(ValueError, match=r"unknown .*nested_bogus"):
                    cls.from_dict(bad)


def test_config_files_import_each_other_as_a_package():
    from pathlib import Path

    import configs
    from configs import cosyvoice2, flow, qwen2

    for path in Path(configs.__file__).parent.glob("*.py"):
        assert "spec_from_file_location" not in path.read_text(), path.name
    # the speech LM backbones and the mounted parts are the presets of their own files
    assert cosyvoice2.get_config("llm_small").llm.model.backbone.hidden_size == qwen2.model_config("small").hidden_size
    assert cosyvoice2.get_config("flow_small").flow.model.to_dict() == flow.named_config("small").to_dict()
