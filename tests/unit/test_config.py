"""Config files, command-line overrides (absl config_flags, locked) and validation errors naming the key."""

import json
import os
import subprocess
import sys

import pytest

from sovits2_jax.train.validate import validate
from sovits2_jax.validation import ConfigError, load_config


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "sovits2_jax.show_config", *args], capture_output=True, text=True, timeout=120, env=env
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


@pytest.mark.parametrize(
    "args,line",
    [
        (["--config=configs/cosyvoice2.py:llm_tiny", "--config.train.lr=1e-4"],
         "error: unknown config key --config.train.lr; did you mean --config.train.optimizer.lr?"),
        (["--config=configs/cosyvoice2.py:llm_tiny", "--config.init.pth=x"],
         "error: unknown config key --config.init.pth; did you mean --config.init.path"),
        (["--config=configs/cosyvoice2.py:llm_tiny", "--config.init.from=x"],
         "error: --config.init.from is now --config.init.path"),
        (["--config=configs/nope.py:llm"],
         "error: --config: cannot read the config file ([Errno 2] No such file or directory: 'configs/nope.py')"),
        (["--config=configs/cosyvoice2.py:llm_tny"],
         "error: --config=configs/cosyvoice2.py:llm_tny: ValueError: unknown config configs/cosyvoice2.py:llm_tny "
         "(did you mean configs/cosyvoice2.py:llm_tiny?); it takes one of llm, llm_small, llm_tiny, dpo,"),
        (["--config=configs/gpt_sovits2.py:vit"], "(did you mean configs/gpt_sovits2.py:vits?)"),
        (["--config=configs/cosyvoice2.py:llm_tiny", "--config.train.optimizer.name=adamw8bit"],
         "error: config.train.optimizer.name='adamw8bit' not in ('adam', 'adamw')"),
        (["--config=configs/cosyvoice2.py:hift_tiny", "--config.train.optimizer_d.lr=0"],
         "error: config.train.optimizer_d.lr=0.0 must be positive"),
        (["--config=configs/cosyvoice2.py:llm_tiny", "--config.train.accum_steps=two"],
         "error: flag --config.train.accum_steps=two: invalid literal for int()"),
    ],
)  # fmt: skip
def test_command_line_mistakes_get_one_line_naming_the_fix(args, line):
    out = run_cli(*args, env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})  # a user's one-CPU machine
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and line in out.stderr, out.stderr


def test_help_lists_the_config_flag():
    out = subprocess.run(
        [sys.executable, "-m", "sovits2_jax.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "--config: ml_collections config file" in out.stdout, out.stdout  # (absl's --help exits 1)


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


@pytest.mark.parametrize(
    "devices,overrides,multiple",
    [(1, {}, 1), (8, {}, 8), (8, {"train.accum_steps": 2}, 16), (8, {"mesh.tensor": 2, "mesh.data": -1}, 4),
     (8, {"data.num_shards": 4}, 2), (6, {"data.num_shards": 4}, 3)],
)  # fmt: skip
def test_batch_multiple_follows_the_mesh(devices, overrides, multiple):
    config = load_config("configs/cosyvoice2.py:llm_tiny")
    assert config.data.batch_multiple == 0  # the default: what the mesh needs
    config.data.max_frames_in_batch = 80 * 16  # the frame budget per shard holds 16 rows of the longest bucket
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    validate(config, num_devices=devices)
    assert config.data.batch_multiple == multiple


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
    with pytest.raises(ConfigError, match=r"config\.data\.batch_multiple=3 .* config\.data\.batch_multiple=2 \(or 0"):
        validate(config, num_devices=2)
    config.data.batch_multiple = 2
    config.data.kind = "video"
    with pytest.raises(ConfigError, match=r"config\.data\.kind='video'"):
        validate(config, num_devices=2)


@pytest.mark.parametrize(
    "spec", ["configs/cosyvoice2.py:llm", "configs/cosyvoice2.py:dpo", "configs/gpt_sovits2.py:ar"]
)
def test_speech_lm_backbone_is_validated(spec):
    config = load_config(spec)
    validate(config, num_devices=8)
    config.model.backbone.num_kv_heads = 5
    with pytest.raises(ConfigError, match=r"config\.model\.backbone\.num_kv_heads=5"):
        validate(config, num_devices=8)


def test_speech_lm_sampling_is_validated():
    config = load_config("configs/cosyvoice2.py:llm_tiny")
    config.sampling.top_p = 1.5
    with pytest.raises(ConfigError, match=r"config\.sampling"):
        validate(config, num_devices=1)


def test_hift_model_is_validated():
    config = load_config("configs/cosyvoice2.py:hift")
    validate(config, num_devices=8)
    config.model.sampling_rate = 22050
    with pytest.raises(ConfigError, match=r"config\.model"):
        validate(config, num_devices=8)


@pytest.mark.parametrize("spec", ["configs/cosyvoice2.py:flow", "configs/cosyvoice2.py:flow_tiny"])
def test_flow_model_is_validated(spec):
    config = load_config(spec)
    validate(config, num_devices=8)
    config.model.estimator.in_channels = 300
    with pytest.raises(ConfigError, match=r"config\.model: estimator\.in_channels=300"):
        validate(config, num_devices=8)


# Every documented ARG of every configs/*.py; each must appear in its file's docstring.
CONFIG_ARGS = {
    "qwen2.py": ["tiny", "small", "50m", "100m", "0.5b", "release"],
    "cosyvoice2.py": [f"{part}{size}" for part in ("llm", "dpo", "flow", "hift") for size in ("", "_tiny", "_small")],
    "gpt_sovits2.py": [f"{part}{size}" for part in ("ar", "vits") for size in ("", "_tiny", "_small")],
    "vits2.py": ["", "v1", "v2", "sovits2", "small", "tiny", "release"],
    "data.py": ["llm", "flow", "hift", "gpt_sovits2"],
}


def _model_sections(config):
    """(where, section, dataclass) for every model / sampling section of a loaded config (by its family)."""
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.models.flow.config import FlowConfig
    from sovits2_jax.models.hift import HiFTConfig
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.models.speech_lm import SpeechLMConfig
    from sovits2_jax.models.vits2.config import VitsConfig

    model_class = {"qwen2": Qwen2Config, "llm": SpeechLMConfig, "dpo": SpeechLMConfig, "gpt_sovits2_ar": SpeechLMConfig,
                   "flow": FlowConfig, "hift": HiFTConfig, "vits": VitsConfig}  # fmt: skip
    if "family" in config:
        yield "model", config.model, model_class[config.family]
    if "sampling" in config:
        yield "sampling", config.sampling, SamplingConfig


def test_every_config_has_the_one_shape():
    """config.model + family, train, init, mesh, sharding (+ data for every family reading Parquet)."""
    from pathlib import Path

    for name, args in CONFIG_ARGS.items():
        if name == "data.py":
            continue
        for arg in args:
            path = Path(__file__).resolve().parents[2] / "configs" / name
            config = load_config(f"{path}:{arg}" if arg else str(path))
            assert {"family", "model", "train", "init", "mesh", "sharding", "seed", "workdir"} <= set(config), arg
            assert ("data" in config) == (config.family != "qwen2"), (name, arg)
            assert not {"model_type", "part"} & set(config), (name, arg)


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


def test_config_files_import_each_other_as_a_package(tmp_path):
    """The top-level configs/ (what --config=configs/... names) is the installed sovits2_jax.configs: one set of
    files, importing each other through the package, with no top-level ``configs`` package of their own."""
    import subprocess
    import sys
    from pathlib import Path

    import sovits2_jax.configs
    from sovits2_jax.configs import cosyvoice2, flow, qwen2

    top = Path(__file__).resolve().parents[2] / "configs"
    assert Path(sovits2_jax.configs.__file__).resolve().parent == top
    for path in top.glob("*.py"):
        text = path.read_text()
        assert "spec_from_file_location" not in text and "from configs" not in text, path.name
    # outside the checkout, the installed package has no top-level module named configs (it would collide with a
    # user's own) and sovits2_jax.configs still resolves
    probe = ("import importlib.util as u; "
             "print(u.find_spec('configs') is None, u.find_spec('sovits2_jax.configs.flow') is not None)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], out
    # the speech LM backbones and the mounted parts are the presets of their own files
    assert cosyvoice2.get_config("llm_small").model.backbone.hidden_size == qwen2.model_config("small").hidden_size
    assert cosyvoice2.get_config("flow_small").model.to_dict() == flow.named_config("small").to_dict()

