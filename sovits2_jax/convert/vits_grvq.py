"""The ``ssl_grvq`` VITS2 decoder (SSL features -> grouped residual VQ -> GPT-SoVITS's SynthesizerTrn) as a
PyTorch state dict, both ways.

    python -m sovits2_jax.convert.vits_grvq --src=WORKDIR_OR_CHECKPOINT --dst=model.pt   # ours -> torch
    python -m sovits2_jax.convert.vits_grvq --src=model.pt --dst=DIR                     # torch -> ours

GPT-SoVITS has no model with this quantizer, so its ``.pth`` (``gpt_sovits`` format) is not used: a file that
GPT-SoVITS would detect but could not load helps nobody. The file is ``torch.save({"state_dict": ..., "config":
VitsConfig dict, "info": str})`` with the keys of the module GPT-SoVITS2 planned, a SynthesizerTrn whose
``quantizer`` is vector-quantize-pytorch's ``GroupedResidualVQ``:

- every parameter under GPT-SoVITS's SynthesizerTrn name (the ``gpt_sovits`` rule table: ``ssl_proj.weight``
  [ssl_dim, ssl_dim, 2], ``enc_p.*``, ``ref_enc.*``, ``flow.flows.{2i}.*``, ``dec.*``, ``enc_q.*``; weight norm as
  ``weight_g`` / ``weight_v``), float32;
- the codebooks as ``GroupedResidualVQ(dim=ssl_dim, groups=G, num_quantizers=Q, codebook_size=C, kmeans_init=True,
  ...)`` holds them, prefixed ``quantizer.``: ``quantizer.rvqs.{g}.layers.{q}._codebook.embed`` [1, C, ssl_dim/G],
  ``.embed_avg`` [1, C, ssl_dim/G], ``.cluster_size`` [1, C] (float32) and ``.initted`` [] (bool).

Our side is an Orbax checkpoint of ours (meta.json format ``gpt_sovits``, part ``vits``, as the trainer writes)
with the codebooks in its ``buffers`` item (``{"grvq": grvq.state_to_dict}``): a trainer step or workdir, an
averaged checkpoint, or what ``torch_to_jax`` writes. Both directions are bit-exact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten

LAYOUT = "sovits2_jax.vits_grvq"  # the file's "info" prefix and our meta.json "torch.layout"
VQ_BUFFER = "grvq"
_VQ_KEY = re.compile(r"^quantizer\.rvqs\.(\d+)\.layers\.(\d+)\._codebook\.(embed|embed_avg|cluster_size|initted)$")


def codebook_items(vq: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GroupedResidualVQ's buffers (``quantizer.`` prefix) from our codebook state (``grvq.state_to_dict``)."""
    embed = np.asarray(vq["embed"], np.float32)
    groups, quantizers = embed.shape[:2]
    out = {}
    for g in range(groups):
        for q in range(quantizers):
            key = f"quantizer.rvqs.{g}.layers.{q}._codebook."
            out[key + "embed"] = embed[g, q][None]
            out[key + "embed_avg"] = np.asarray(vq["embed_avg"], np.float32)[g, q][None]
            out[key + "cluster_size"] = np.asarray(vq["cluster_size"], np.float32)[g, q][None]
            out[key + "initted"] = np.asarray(bool(np.asarray(vq["initted"])))
    return out


def codebook_state(items: Mapping[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """``codebook_items`` back, checked against the config's groups, quantizers and sizes (every key present)."""
    g_n, q_n, c, d = config.vq_groups, config.vq_quantizers, config.codebook_size, config.ssl_dim // config.vq_groups
    want = {f"quantizer.rvqs.{g}.layers.{q}._codebook.{n}" for g in range(g_n) for q in range(q_n)
            for n in ("embed", "embed_avg", "cluster_size", "initted")}  # fmt: skip
    missing, extra = sorted(want - set(items)), sorted(set(items) - want)
    if missing or extra:
        raise ConversionError(f"GroupedResidualVQ buffers: missing {missing[:4]}, unexpected {extra[:4]}")
    embed = np.zeros((g_n, q_n, c, d), np.float32)
    embed_avg, cluster_size, initted = np.zeros_like(embed), np.zeros((g_n, q_n, c), np.float32), []
    for g in range(g_n):
        for q in range(q_n):
            key = f"quantizer.rvqs.{g}.layers.{q}._codebook."
            for name, dst, shape in (("embed", embed, (1, c, d)), ("embed_avg", embed_avg, (1, c, d)),
                                     ("cluster_size", cluster_size, (1, c))):  # fmt: skip
                value = np.asarray(items[key + name])
                if value.shape != shape:
                    raise ConversionError(f"{key + name}: shape {value.shape}, the config gives {shape}")
                dst[g, q] = value[0]
            initted.append(bool(np.asarray(items[key + "initted"])))
    if len(set(initted)) != 1:
        raise ConversionError("GroupedResidualVQ buffers: some codebooks are initialised and some are not")
    return dict(embed=embed, embed_avg=embed_avg, cluster_size=cluster_size, initted=np.asarray(initted[0]))


def to_state_dict(params: Mapping, buffers: Mapping, config) -> dict[str, np.ndarray]:
    """{torch key: array} of the model's params and its ``{"grvq": ...}`` buffers."""
    from sovits2_jax.convert.gpt_sovits import flat_to_torch_items

    _check_config(config)
    if VQ_BUFFER not in buffers:
        raise ConversionError(f"the checkpoint holds no {VQ_BUFFER!r} buffers (the ssl_grvq codebooks)")
    items = dict(flat_to_torch_items(flatten(params)))
    items.update(codebook_items(buffers[VQ_BUFFER]))
    return items


def from_state_dict(items: Mapping[str, np.ndarray], config, source: str = "<state_dict>") -> tuple[dict, dict]:
    """(nested params, ``{"grvq": codebook state}``) from a state dict of this layout; strict."""
    from sovits2_jax.convert.gpt_sovits import torch_items_to_flat

    _check_config(config)
    vq = {k: v for k, v in items.items() if _VQ_KEY.match(k)}
    rest = [(k, v) for k, v in items.items() if k not in vq]
    flat, other = torch_items_to_flat(rest, config, source=source)
    if other:
        raise ConversionError(f"{source}: unexpected GPT-SoVITS codebook buffers {sorted(other)[:3]}")
    return unflatten(flat), {VQ_BUFFER: codebook_state(vq, config)}


def _check_config(config) -> None:
    if config.content != "ssl_grvq":
        raise ConversionError(f"content {config.content!r} is not ssl_grvq (GPT-SoVITS models: the gpt_sovits format)")


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    """Our checkpoint (a trainer workdir or step, an averaged or converted one) -> ``dst`` (.pt, see above)."""
    import torch

    from sovits2_jax.convert.torch_io import numpy_to_tensor
    from sovits2_jax.models.vits2.config import VitsConfig

    src = ckpt.resolve_checkpoint_dir(src)
    params, meta = ckpt.load_checkpoint(src)
    config = VitsConfig.from_dict(meta["config"])
    items = to_state_dict(params, ckpt.load_buffers(src), config)
    obj = {
        "state_dict": {k: numpy_to_tensor(np.ascontiguousarray(v)) for k, v in items.items()},
        "config": config.to_dict(),
        "info": f"{LAYOUT}: converted by sovits2-jax from {src}",
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    """A file of this layout -> an Orbax checkpoint of ours (params, buffers, meta.json), what ``parts.load`` /
    ``parts.load_buffers`` and ``config.init.path`` read."""
    from sovits2_jax.convert.torch_io import iter_state_dict, load_torch_object
    from sovits2_jax.models.vits2.config import VitsConfig

    obj = load_torch_object(src)
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict) or "state_dict" not in obj:
        raise ConversionError(f"{src}: not a {LAYOUT} file (a dict with state_dict and config)")
    config = VitsConfig.from_dict(obj["config"])
    params, buffers = from_state_dict(dict(iter_state_dict(obj, str(src))), config, source=str(src))
    meta = {"format": "gpt_sovits", "part": "vits", "config": config.to_dict(),
            "torch": {"layout": LAYOUT, "info": obj.get("info")}}  # fmt: skip
    return ckpt.save_checkpoint(dst, params, meta, buffers=buffers)


def main(argv: list[str]) -> None:
    cli.command(argv)
    f = flags.FLAGS
    try:
        if Path(f.src).is_dir():
            jax_to_torch(f.src, f.dst)
            print(f"{f.src} -> {f.dst} ({LAYOUT}, Orbax -> PyTorch)")
        else:
            torch_to_jax(f.src, f.dst)
            print(f"{f.src} -> {f.dst} ({LAYOUT}, PyTorch -> Orbax)")
    except ConversionError as e:
        raise cli.Error(str(e)) from None


if __name__ == "__main__":
    flags.DEFINE_string("src", None, "our checkpoint (-> torch) or a .pt of this layout (-> ours)", required=True)
    flags.DEFINE_string("dst", None, "the file or directory to write", required=True)
    cli.run(main)
