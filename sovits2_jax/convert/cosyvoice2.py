"""The ``cosyvoice2`` format: a whole CosyVoice2 model directory <-> one directory of Orbax sub-checkpoints.

Torch side (as released): ``cosyvoice2.yaml`` (HyperPyYAML), ``llm.pt``, ``flow.pt``, ``hift.pt``,
``CosyVoice-BlankEN/`` (the Qwen2 config + tokenizer the yaml's ``qwen_pretrain_path`` points at), and assets
such as ``campplus.onnx``, ``speech_tokenizer_v2.onnx``, ``spk2info.pt``.

Our side::

    dst/meta.json          {"format": "cosyvoice2", "parts": [...], ...}
    dst/cosyvoice2.yaml    copied verbatim
    dst/<part>/            one checkpoint per converted part (save_checkpoint layout, its config in meta.json)
    dst/assets/            every other file or folder of the source directory, copied verbatim

Each part is converted by the module in ``COSYVOICE2_PARTS`` (``config_from_yaml``, ``default_config``,
``build_model``, ``torch_to_params``, ``params_to_torch``). A part whose ``.pt`` is absent, or whose module is not
installed, is skipped (its ``.pt``, if present, travels in ``assets/`` so writing the directory back restores it).
One part alone (a trainer checkpoint, an average) is an Orbax checkpoint of format ``cosyvoice2.<part>`` whose
meta.json holds the part's config (``PartFormat``).

The format protocol (``convert/formats.py``): ``detect`` accepts a model directory as released (no meta.json);
``parts`` / ``load_part`` read that, our converted directory and a one-part checkpoint alike.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml
from sovits2_jax.convert.mapping import ConversionError

NAME = "cosyvoice2"
DESCRIPTION = "a CosyVoice2 model directory (cosyvoice2.yaml, llm.pt, flow.pt, hift.pt)"
YAML = "cosyvoice2.yaml"
BLANK_EN = "CosyVoice-BlankEN"
ASSETS = "assets"
COSYVOICE2_PARTS = {
    "llm": "sovits2_jax.convert.cosyvoice2_llm",
    "flow": "sovits2_jax.convert.cosyvoice2_flow",
    "hift": "sovits2_jax.convert.cosyvoice2_hift",
}

PARTS = tuple(COSYVOICE2_PARTS)

log = logging.getLogger(__name__)


def detect(src: str | Path) -> bool:
    """A CosyVoice2 model directory as released (ours, converted, carries a meta.json: the ``orbax`` format)."""
    src = Path(src)
    return src.is_dir() and (src / YAML).is_file() and ckpt.meta_path(src) is None


def _checkpoint_name(src: Path) -> str | None:
    """meta.json ``format`` of our checkpoint ``src`` (None for a model directory as released)."""
    return str(ckpt.read_meta(src).get("format")) if ckpt.meta_path(src) is not None else None


def parts(src: str | Path) -> tuple[str, ...]:
    """The parts of a model directory (whose ``.pt`` exist), of our converted one, or of a one-part checkpoint."""
    src = Path(src)
    name = _checkpoint_name(src)
    if name is None:
        return tuple(p for p in COSYVOICE2_PARTS if (src / f"{p}.pt").is_file())
    if name == NAME:
        return tuple(p for p in ckpt.read_meta(src).get("parts", []) if p in COSYVOICE2_PARTS)
    return (_single_part(src, name),)


def part_path(src: str | Path, part: str) -> Path:
    """Where ``part`` is (or would be) in a model directory: ``<part>.pt``, or ``<part>/`` in our converted one."""
    src = Path(src)
    return src / part if _checkpoint_name(src) == NAME else src / f"{part}.pt"


def _single_part(src: Path, name: str) -> str:
    prefix, _, part = name.partition(".")
    if prefix != NAME or part not in COSYVOICE2_PARTS:
        raise ConversionError(f"{src}: checkpoint format {name!r} is not {NAME} nor {NAME}.<part>")
    return part


def checkpoint_format(part: str) -> str | None:
    """meta.json format of a checkpoint of ours holding one part (what a trainer writes)."""
    return f"{NAME}.{part}" if part in COSYVOICE2_PARTS else None


def build_model(part: str, config, rngs):
    """The part's module (its part module's ``build_model``)."""
    return _part_module(part).build_model(config, rngs)


def _part_module(part: str) -> ModuleType:
    if part not in COSYVOICE2_PARTS:
        raise ConversionError(f"a CosyVoice2 model has no part {part!r} (one of {', '.join(COSYVOICE2_PARTS)})")
    return importlib.import_module(COSYVOICE2_PARTS[part])


def read_yaml(directory: str | Path) -> dict[str, Any]:
    """The directory's cosyvoice2.yaml as plain data, ``qwen_pretrain_path`` pointing at its BlankEN folder."""
    directory = Path(directory)
    if not (directory / YAML).is_file():
        raise ConversionError(f"{directory}: no {YAML}, not a CosyVoice2 model directory")
    return load_hyperpyyaml(directory / YAML, overrides={"qwen_pretrain_path": str(directory / BLANK_EN)})


def part_modules() -> dict[str, ModuleType]:
    """The part converters that are importable in this installation."""
    mods = {}
    for part, name in COSYVOICE2_PARTS.items():
        try:
            mods[part] = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            log.warning("cosyvoice2: no converter module %s, part %r is copied unconverted", name, part)
    return mods


def _config_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    """Converts every available part of a CosyVoice2 model directory; copies the yaml and the assets."""
    from sovits2_jax.convert.torch_io import iter_torch_file

    src, dst = Path(src), Path(dst)
    cfg = read_yaml(src)
    mods = part_modules()
    present = {part: src / f"{part}.pt" for part in mods if (src / f"{part}.pt").is_file()}
    if not present:
        raise ConversionError(f"{src}: none of {', '.join(p + '.pt' for p in COSYVOICE2_PARTS)} can be converted")
    missing = [f"{part}.pt" for part in mods if part not in present]
    if missing:
        log.warning(
            "%s has no %s: converting %s only", src, ", ".join(missing), ", ".join(f"{p}.pt" for p in present)
        )
    tmp = ckpt.staging_dir(dst)
    try:
        for part, path in present.items():
            mod = mods[part]
            config = mod.config_from_yaml(cfg)
            params = mod.torch_to_params(iter_torch_file(path), config)
            (tmp / part).mkdir()
            ckpt.write_checkpoint(
                tmp / part, params, {"format": f"{NAME}.{part}", "part": part, "config": _config_dict(config)}
            )
        shutil.copy2(src / YAML, tmp / YAML)
        (tmp / ASSETS).mkdir()
        converted = {path.name for path in present.values()}
        for item in sorted(src.iterdir()):
            if item.name != YAML and item.name not in converted:
                _copy(item, tmp / ASSETS / item.name)
        meta = {"format": NAME, "parts": sorted(present), "yaml": YAML, "source": str(src)}
        (tmp / ckpt.META).write_text(json.dumps(meta, indent=2))
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def load_part(src: str | Path, part: str) -> tuple[dict, Any]:
    """(nested params, config) of one part of a model directory as released (the config from its yaml), of our
    converted directory (from the copied yaml) or of a one-part checkpoint (from its meta.json)."""
    src = Path(src)
    name = _checkpoint_name(src)
    if name is None:
        return _load_torch_part(src, part)
    if name != NAME:
        have = _single_part(src, name)
        if have != part:
            raise ConversionError(f"{src}: holds part {have!r} ({name}), not {part!r}")
        return PartFormat(part).load(src)
    if part not in COSYVOICE2_PARTS:
        raise ConversionError(f"{src}: a CosyVoice2 directory has no part {part!r}")
    meta = ckpt.read_meta(src)
    if part not in meta.get("parts", []):
        raise ConversionError(f"{src}: part {part!r} was not converted (have {meta.get('parts')})")
    mod = _part_module(part)
    cfg = load_hyperpyyaml(src / YAML, overrides={"qwen_pretrain_path": str(src / ASSETS / BLANK_EN)})
    params, _ = ckpt.load_checkpoint(src / part)
    return params, mod.config_from_yaml(cfg)


def _load_torch_part(src: Path, part: str) -> tuple[dict, Any]:
    from sovits2_jax.convert.torch_io import iter_torch_file

    if part not in COSYVOICE2_PARTS:
        raise ConversionError(f"{src}: a CosyVoice2 model directory has no part {part!r}")
    weights = src / f"{part}.pt"
    if not weights.is_file():
        raise ConversionError(f"{src}: CosyVoice2 model directory without {weights.name}")
    mod = _part_module(part)
    config = mod.config_from_yaml(read_yaml(src))
    return mod.torch_to_params(iter_torch_file(weights), config, source=str(weights)), config


def part_format(part: str) -> PartFormat:
    """The writer of a one-part checkpoint (meta.json format ``cosyvoice2.<part>``)."""
    if part not in part_modules():
        raise ConversionError(f"no converter module for the CosyVoice2 {part!r} (format {NAME}.{part})")
    return PartFormat(part)


class PartFormat:
    """One CosyVoice2 part as its own checkpoint (a converted part, a trainer step, an average) -> ``<part>.pt``."""

    def __init__(self, part: str):
        self.part = part
        self.NAME = f"{NAME}.{part}"

    def load(self, src: str | Path) -> tuple[dict, object]:
        """(nested params, part config from meta.json)."""
        params, meta = ckpt.load_checkpoint(src)
        mod = _part_module(self.part)
        try:
            return params, type(mod.default_config()).from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{src}: meta.json has no valid {self.part} config ({e})") from None

    def jax_to_torch(self, src: str | Path, dst: str | Path) -> Path:
        """Writes the part's state dict to ``dst`` (``dst/<part>.pt`` when ``dst`` is a directory)."""
        from sovits2_jax.convert.torch_io import save_torch_state_dict

        dst = Path(dst)
        if dst.is_dir():
            dst = dst / f"{self.part}.pt"
        params, config = self.load(src)
        save_torch_state_dict(_part_module(self.part).params_to_torch(params, config), dst)
        return dst


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    """Writes the CosyVoice2 model directory back: yaml, the assets, and ``<part>.pt`` for converted parts."""
    from sovits2_jax.convert.torch_io import save_torch_state_dict

    src, dst = Path(src), Path(dst)
    meta = ckpt.read_meta(src)
    if meta.get("format") != NAME:
        raise ConversionError(f"{src}: format {meta.get('format')!r} is not {NAME}")
    tmp = ckpt.staging_dir(dst)
    try:
        shutil.copy2(src / YAML, tmp / YAML)
        assets = src / ASSETS
        if assets.is_dir():
            for item in sorted(assets.iterdir()):
                _copy(item, tmp / item.name)
        cfg = read_yaml(tmp)
        for part in meta["parts"]:
            mod = importlib.import_module(COSYVOICE2_PARTS[part])
            config = mod.config_from_yaml(cfg)
            params, _ = ckpt.load_checkpoint(src / part)
            save_torch_state_dict(mod.params_to_torch(params, config), tmp / f"{part}.pt")
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def load_llm(src: str | Path, **backbone_overrides):
    """(graphdef, params, SpeechLMConfig, SamplingConfig) of the speech LM, from our converted directory or
    straight from a CosyVoice2 model directory (``backbone_overrides`` e.g. dtype="bfloat16")."""
    from flax import nnx

    from sovits2_jax.convert import cosyvoice2_llm
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.speech_lm import SpeechLM

    src = Path(src)
    if (src / ckpt.META).is_file():
        if ckpt.read_meta(src).get("format") != NAME:
            raise ConversionError(f"{src}: not a {NAME} checkpoint")
        cfg = load_hyperpyyaml(src / YAML, overrides={"qwen_pretrain_path": str(src / ASSETS / BLANK_EN)})
        nested, _ = ckpt.load_checkpoint(src / "llm")
    else:
        cfg = read_yaml(src)
        nested = None
    config = cosyvoice2_llm.config_from_yaml(cfg, **backbone_overrides)
    if nested is None:
        nested = cosyvoice2_llm.load_llm_pt(src / "llm.pt", config)
    graphdef, params = params_from_flat(lambda: SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))
    return graphdef, params, config, cosyvoice2_llm.sampling_from_yaml(cfg)
