"""Finding and loading the pieces of a CosyVoice2 model for inference, from any of the sources we read.

``find_model(path, base=None)`` checks and locates everything without reading weights, ``load_parts`` reads the
weights, ``build_engine`` makes the batched ``Engine``. ``path`` is a CosyVoice2 model directory
(``cosyvoice2.yaml``, ``llm.pt``, ``flow.pt``, ``hift.pt`` + assets), our converted Orbax directory (``meta.json``,
the parts, ``assets/``) or a trainer workdir / checkpoint / averaged checkpoint (one part; the others and the
assets come from ``base``). Each part is read by ``sovits2_jax.convert.parts.load`` (the converters' readers).
Assets: ``speech_tokenizer_v2.onnx``, ``campplus.onnx`` and ``spk2info.pt``; the first two are only needed by
modes with prompt audio.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert.mapping import ConversionError
from sovits2_jax.models.sampling_config import SamplingConfig

PARTS = ("llm", "flow", "hift")
SPEECH_TOKENIZER = "speech_tokenizer_v2.onnx"
SPEAKER_MODEL = "campplus.onnx"
SPK2INFO = "spk2info.pt"
YAML = "cosyvoice2.yaml"


class ModelError(ValueError):
    """A model path that is missing, incomplete or of an unknown kind."""


@dataclasses.dataclass
class ModelFiles:
    """Where each part and asset of a model is, and the yaml's settings (found without loading weights)."""

    part_sources: dict[str, Path]  # part -> the path ``parts.load`` reads it from
    sampling: SamplingConfig
    sample_rate: int
    token_mel_ratio: int
    speech_tokenizer: Path | None
    speaker_model: Path | None
    spk2info: Path | None


@dataclasses.dataclass
class LoadedModel:
    """Params and configs of the three parts, plus the files they came from."""

    params: dict[str, dict]  # part -> nested numpy params
    configs: dict[str, Any]  # part -> SpeechLMConfig / FlowConfig / HiFTConfig
    files: ModelFiles

    @property
    def sampling(self) -> SamplingConfig:
        return self.files.sampling


def _assets_dir(path: Path) -> Path:
    return path / "assets" if (path / ckpt.META).is_file() else path


def _yaml(path: Path) -> dict:
    """The CosyVoice2 yaml of a model directory of either kind."""
    from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml

    blank = _assets_dir(path) / "CosyVoice-BlankEN"
    try:
        return load_hyperpyyaml(path / YAML, overrides={"qwen_pretrain_path": str(blank)})
    except Exception as e:  # a yaml or hyperpyyaml error
        raise ModelError(f"{path / YAML}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / YAML).is_file()


def _missing_parts(path: Path) -> list[str]:
    if (path / ckpt.META).is_file():
        parts = ckpt.read_meta(path).get("parts", [])
        return [p for p in PARTS if p not in parts]
    return [f"{p}.pt" for p in PARTS if not (path / f"{p}.pt").is_file()]


def _checkpoint_part(path: Path) -> str:
    """The part a trainer checkpoint / workdir / averaged checkpoint holds (from its meta.json)."""
    from sovits2_jax.convert.parts import FORMAT_PARTS

    step = ckpt.resolve_checkpoint_dir(path)
    try:
        meta = ckpt.read_meta(step)
    except ConversionError as e:
        raise ModelError(f"{path}: not a CosyVoice2 model directory (no {YAML}) nor a checkpoint of ours") from e
    part = FORMAT_PARTS.get(str(meta.get("format")), meta.get("part"))
    if part not in PARTS:
        raise ModelError(f"{path}: a checkpoint of {meta.get('format')!r}, not of a CosyVoice2 llm, flow or hift")
    return part


def find_model(path: str | Path, base: str | Path | None = None) -> ModelFiles:
    """Checks that every part and the yaml are there and finds the assets (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model directory")
    sources: dict[str, Path] = {}
    if _is_model_dir(path):
        root = path
    else:
        sources[_checkpoint_part(path)] = path
        if base is None:
            raise ModelError(f"{path} holds only the {next(iter(sources))}; give a CosyVoice2 model dir for the rest")
        root = Path(base)
        if not _is_model_dir(root):
            raise ModelError(f"{root}: not a CosyVoice2 model directory (no {YAML})")
    missing = [m for m in _missing_parts(root) if m.split(".")[0] not in sources]
    if missing:
        raise ModelError(f"{root}: the model directory lacks {', '.join(missing)} (it needs llm, flow and hift)")
    for part in PARTS:
        sources.setdefault(part, root)
    cfg = _yaml(root)
    from sovits2_jax.convert import cosyvoice2_flow, cosyvoice2_llm

    try:
        sampling = cosyvoice2_llm.sampling_from_yaml(cfg) if "llm" in cfg else SamplingConfig()
        ratio = cosyvoice2_flow.config_from_yaml(cfg).token_mel_ratio if "flow" in cfg else 2
    except (ConversionError, ValueError) as e:
        raise ModelError(f"{root / YAML}: {e}") from e
    assets = _assets_dir(root)

    def asset(name):
        return assets / name if (assets / name).is_file() else None

    return ModelFiles(
        part_sources=sources, sampling=sampling, sample_rate=int(cfg.get("sample_rate", 24000)),
        token_mel_ratio=ratio, speech_tokenizer=asset(SPEECH_TOKENIZER), speaker_model=asset(SPEAKER_MODEL),
        spk2info=asset(SPK2INFO),
    )  # fmt: skip


def load_parts(files: ModelFiles) -> LoadedModel:
    """Reads the three parts' weights (``parts.load``); an unreadable part -> ModelError naming it."""
    from sovits2_jax.convert import parts

    params, configs = {}, {}
    for part, src in files.part_sources.items():
        try:
            params[part], configs[part] = parts.load(src, part)
        except ConversionError as e:
            raise ModelError(f"cannot load the {part} from {src}: {e}") from e
    return LoadedModel(params, configs, files)


def _module(part: str, config):
    from flax import nnx

    if part == "llm":
        from sovits2_jax.models.speech_lm import SpeechLM

        return SpeechLM(config, rngs=nnx.Rngs(0))
    from sovits2_jax.convert import cosyvoice2_flow, cosyvoice2_hift

    build = cosyvoice2_flow.build_model if part == "flow" else cosyvoice2_hift.build_model
    return build(config, nnx.Rngs(0))


def model_state(loaded: LoadedModel, part: str):
    """(graphdef, params) of one loaded part (the params placed on the default device)."""
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat

    config = loaded.configs[part]
    try:
        return params_from_flat(lambda: _module(part, config), flatten(loaded.params[part]))
    except ConversionError as e:
        raise ModelError(f"{loaded.files.part_sources[part]}: the {part} does not fit its config: {e}") from e


def build_engine(loaded: LoadedModel, **engine_config):
    """The batched ``Engine`` over the three parts (``engine_config``: EngineConfig fields; the sampling
    defaults to the model's own)."""
    from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig

    engine_config.setdefault("sampling", loaded.files.sampling)
    llm = (*model_state(loaded, "llm"), loaded.configs["llm"])
    return Engine(llm, model_state(loaded, "flow"), model_state(loaded, "hift"), EngineConfig(**engine_config))
