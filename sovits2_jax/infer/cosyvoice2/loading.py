"""Finding and loading the pieces of a CosyVoice2 model for inference, from any of the sources we read.

``find_model(path, base=None)`` checks and locates everything without reading weights, ``load_parts`` reads the
weights, ``build_engine`` makes the batched ``Engine``. ``path`` is a CosyVoice2 model directory
(``cosyvoice2.yaml``, ``llm.pt``, ``flow.pt``, ``hift.pt`` + assets), our converted Orbax directory (``meta.json``,
the parts, ``assets/``) or a trainer workdir / checkpoint / averaged checkpoint (one part; the others and the
assets come from ``base``). Which parts a path holds comes from ``sovits2_jax.convert.parts.held_parts``, each part
is read by ``parts.load`` and its module built by ``parts.build_module`` (the format modules of ``convert``).
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
    """Where the model directory lacks a part (``llm.pt``, or ``llm`` in our converted directory)."""
    from sovits2_jax.convert import cosyvoice2, parts

    try:
        held = parts.held_parts(path)
    except ConversionError as e:
        raise ModelError(str(e)) from e
    return [cosyvoice2.part_path(path, p).name for p in PARTS if p not in held]


def _checkpoint_part(path: Path) -> str:
    """The part a trainer checkpoint / workdir / averaged checkpoint holds (its format's ``parts``)."""
    from sovits2_jax.convert import parts

    try:
        held = parts.held_parts(path)
    except ConversionError as e:
        raise ModelError(f"{path}: not a CosyVoice2 model directory (no {YAML}) nor a checkpoint of ours") from e
    if len(held) != 1 or held[0] not in PARTS:
        have = ", ".join(held) or "no part"
        raise ModelError(f"{path}: a checkpoint of {have}, not of one CosyVoice2 llm, flow or hift")
    return held[0]


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


def model_state(loaded: LoadedModel, part: str):
    """(graphdef, params) of one loaded part (the params placed on the default device)."""
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.convert.parts import build_module

    config = loaded.configs[part]
    try:
        return params_from_flat(lambda: build_module(part, config), flatten(loaded.params[part]))
    except ConversionError as e:
        raise ModelError(f"{loaded.files.part_sources[part]}: the {part} does not fit its config: {e}") from e


def build_engine(loaded: LoadedModel, **engine_config):
    """The batched ``Engine`` over the three parts (``engine_config``: EngineConfig fields; the sampling
    defaults to the model's own)."""
    from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig

    engine_config.setdefault("sampling", loaded.files.sampling)
    llm = (*model_state(loaded, "llm"), loaded.configs["llm"])
    return Engine(llm, model_state(loaded, "flow"), model_state(loaded, "hift"), EngineConfig(**engine_config))
