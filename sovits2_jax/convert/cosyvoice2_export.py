"""A CosyVoice2 model directory from our llm / flow / hift checkpoints (recipe stage 7).

    python -m sovits2_jax.convert.cosyvoice2_export --llm=CKPT --flow=CKPT --hift=CKPT --dst=DIR \\
        [--pretrained=RELEASE_DIR]

Each ``CKPT`` is a part checkpoint of ours (an averaged one, a trainer step, a trainer workdir: its latest step).
``DIR`` gets ``llm.pt`` / ``flow.pt`` / ``hift.pt`` (the converters' writers), ``cosyvoice2.yaml`` and
``CosyVoice-BlankEN/``. With ``--pretrained`` (the release directory a fine-tune started from) its yaml, BlankEN
folder and assets (campplus.onnx, speech_tokenizer_v2.onnx, spk2info.pt, ...) are copied, after checking that the
yaml describes the exported models; without it the yaml is written from the checkpoints' configs (with the
frontend entries CosyVoice2's own loader reads) and BlankEN is the trained backbone as a HF Qwen2 directory with
the BPE's tokenizer files. Written atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from absl import flags

from sovits2_jax import cli
from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import cosyvoice2, hf_qwen2
from sovits2_jax.convert.cosyvoice2 import PartFormat
from sovits2_jax.convert.cosyvoice2_yaml import check_same_architecture, cosyvoice2_yaml
from sovits2_jax.convert.formats import format_of_checkpoint
from sovits2_jax.convert.mapping import ConversionError, flatten, ours_to_torch, unstack_layers


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so importing this module defines none)."""
    for part in cosyvoice2.COSYVOICE2_PARTS:
        flags.DEFINE_string(part, None, f"our {part} checkpoint")
    flags.DEFINE_string("dst", None, "the CosyVoice2 model directory to write")
    flags.DEFINE_string("pretrained", None, "release CosyVoice2 directory to take yaml and assets from")


def _part_format(src: Path, part: str) -> PartFormat:
    fmt = format_of_checkpoint(src)
    if not isinstance(fmt, PartFormat) or fmt.part != part:
        raise ConversionError(f"{src}: holds {fmt.NAME}, not the CosyVoice2 {part}")
    return fmt


def write_backbone(params: dict, config, dst: Path) -> None:
    """The SpeechLM's Qwen2 backbone as a HF directory (config.json, safetensors, the BPE's tokenizer files), as
    CosyVoice-BlankEN."""
    from sovits2_jax.convert.qwen_tokenizer_files import write_tokenizer_files
    from sovits2_jax.convert.torch_io import save_hf_weights

    backbone = config.backbone
    flat = flatten(params["llm"])
    if backbone.scan_layers:
        flat = unstack_layers(flat, "model.layers")
    dst.mkdir()
    save_hf_weights(ours_to_torch(flat, hf_qwen2.RULES), dst)
    (dst / "config.json").write_text(json.dumps(backbone.to_hf(), indent=2))
    write_tokenizer_files(dst)


def _check_yaml(directory: Path, configs: dict) -> None:
    cfg = cosyvoice2.read_yaml(directory)
    mods = cosyvoice2.part_modules()
    for part, config in configs.items():
        where = f"{directory.name}/{cosyvoice2.YAML} (export without --pretrained to write a matching one)"
        check_same_architecture(part, mods[part].config_from_yaml(cfg), config, where)


def export_model_dir(parts: dict[str, str | Path], dst: str | Path, pretrained: str | Path | None = None) -> Path:
    """Writes the CosyVoice2 model directory ``dst`` from ``{part: checkpoint}``; returns ``dst``."""
    if not parts:
        raise ConversionError("give at least one of --llm, --flow, --hift")
    pretrained = Path(pretrained) if pretrained else None
    if pretrained is not None and not cosyvoice2.detect(pretrained):
        raise ConversionError(f"{pretrained}: not a CosyVoice2 model directory (no {cosyvoice2.YAML})")
    tmp = ckpt.staging_dir(dst)
    try:
        configs = {}
        for part, src in parts.items():
            src = ckpt.resolve_checkpoint_dir(src)
            fmt = _part_format(src, part)
            fmt.jax_to_torch(src, tmp / f"{part}.pt")
            params, configs[part] = fmt.load(src)
            if part == "llm" and (pretrained is None or not (pretrained / cosyvoice2.BLANK_EN).is_dir()):
                write_backbone(params, configs[part], tmp / cosyvoice2.BLANK_EN)
            del params
        if pretrained is not None:
            written = {f"{p}.pt" for p in parts}
            for item in sorted(pretrained.iterdir()):
                if item.name not in written and not (tmp / item.name).exists():
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
            _check_yaml(tmp, configs)
        else:
            blank = str(tmp / cosyvoice2.BLANK_EN) if "llm" in configs else ""
            text = cosyvoice2_yaml(
                configs.get("llm"), configs.get("flow"), configs.get("hift"), qwen_pretrain_path=blank
            )
            (tmp / cosyvoice2.YAML).write_text(text)
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)


def main(argv) -> int:
    del argv
    args = flags.FLAGS
    parts = {part: args[part].value for part in cosyvoice2.COSYVOICE2_PARTS if args[part].value}
    if not args.dst:
        raise cli.Error("give --dst=DIR")
    try:
        dst = export_model_dir(parts, args.dst, args.pretrained)
    except ConversionError as e:
        raise cli.Error(str(e)) from None
    print(f"{', '.join(f'{p} {s}' for p, s in parts.items())} -> {dst}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
