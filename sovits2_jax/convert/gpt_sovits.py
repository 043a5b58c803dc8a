"""Converter format ``gpt_sovits``: GPT-SoVITS s2 (SoVITS) ``.pth`` <-> Orbax checkpoint of our SynthesizerTrn.

A .pth is ``torch.save({'weight': state_dict (fp16, no enc_q.*), 'config': HParams, 'info': str})``. Newer
GPT-SoVITS releases overwrite the zip magic b'PK' with a two-digit version header (b'03' v3 ... b'06'
v2ProPlus); we accept any two ASCII digits and write the same header back. ``config`` is GPT-SoVITS's
``utils.HParams``: it is unpickled with torch's weights-only loader through a stand-in class (GPT-SoVITS need not
be installed) and written back as a plain dict (what gpt-sovits-infer's ``DictToAttrRecursive`` expects).
v1 / v2 are told apart by the rows of ``enc_p.text_embedding`` (322 / 732) and the reference encoder's input
width (1025 / 704). Codebook EMA buffers (``inited``, ``cluster_size``, ``embed_avg``) are not model parameters:
they are kept in ``torch_buffers.npz`` beside the Orbax params so the round trip is bit-exact.

A format of ``convert/formats.py`` whose sources hold one part, ``vits`` (a VitsConfig).
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sovits2_jax.convert.gpt_sovits_keys import (
    normalize_weight_norm_keys,
    rules_for,
    to_parametrized_keys,
    uses_parametrized_keys,
)
from sovits2_jax.convert.mapping import ConversionError, flatten, ours_to_torch, torch_to_ours

NAME = "gpt_sovits"
DESCRIPTION = "a GPT-SoVITS s2 .pth"
PARTS = ("vits",)
BUFFERS_FILE = "torch_buffers.npz"
_BUFFER = re.compile(r"^quantizer\.vq\.layers\.\d+\._codebook\.(inited|cluster_size|embed_avg)$")
_HEADER = re.compile(rb"^[0-9]{2}$")
HPARAMS_MODULES = ("utils", "GPT_SoVITS.utils", "gpt_sovits.utils", "module.utils", "tools.utils")


# --------------------------------------------------------------------------------------------------- file level
# SynthesizerTrn hyper-parameters read from / written to the .pth's config['model']
MODEL_HPARAMS = (
    "inter_channels",
    "hidden_channels",
    "filter_channels",
    "n_heads",
    "n_layers",
    "kernel_size",
    "p_dropout",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "gin_channels",
    "semantic_frame_rate",
)


def _hparams_standins() -> list[type]:
    """Classes named ``<module>.HParams`` for torch's weights-only allow-list; they rebuild as plain objects."""
    out = []
    for mod in HPARAMS_MODULES:
        cls = type("HParams", (), {"__module__": mod, "__qualname__": "HParams"})
        out.append(cls)
    return out


def to_plain(obj: Any) -> Any:
    """HParams stand-ins / dicts / lists -> JSON-able plain Python."""
    if hasattr(obj, "__dict__") and type(obj).__name__ == "HParams":
        obj = vars(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def read_header(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(2)


def load_pth(path: str | Path) -> tuple[dict, bytes | None]:
    """(the unpickled dict with config as plain data, the version header or None for a plain zip)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    data = path.read_bytes()
    head = data[:2]
    if head == b"PK":
        header = None
    elif _HEADER.match(head):
        header = head
        data = b"PK" + data[2:]
    else:
        raise ConversionError(f"{path}: neither a zip checkpoint nor a GPT-SoVITS version header (starts {head!r})")
    try:
        with torch.serialization.safe_globals(_hparams_standins()):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: cannot be read as a GPT-SoVITS .pth ({e})") from e
    if not isinstance(obj, dict) or "weight" not in obj:
        raise ConversionError(f"{path}: expected a dict with 'weight', 'config', 'info'; got {type(obj).__name__}")
    obj = dict(obj)
    obj["config"] = to_plain(obj.get("config", {}))
    return obj, header


def save_pth(obj: dict, path: str | Path, header: bytes | None = None) -> None:
    """torch.save ``obj`` atomically; ``header`` (two ASCII digits) replaces the zip magic."""
    import torch

    if header is not None and not _HEADER.match(header):
        raise ValueError(f"version header must be two ASCII digits, got {header!r}")
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    if header is not None:
        data = header + data[2:]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def detect(src: str | Path) -> bool:
    src = Path(src)
    if not src.is_file() or src.suffix not in (".pth", ".pt"):
        return False
    head = read_header(src)
    if head != b"PK" and not _HEADER.match(head):
        return False
    try:
        obj, _ = load_pth(src)
    except ConversionError:
        return False
    weight = obj.get("weight")
    return isinstance(weight, Mapping) and any(str(k).startswith("enc_p.") for k in weight)


def parts(src: str | Path) -> tuple[str, ...]:
    return PARTS


def load_part(src: str | Path, part: str) -> tuple[dict, Any]:
    """(nested fp32 params, VitsConfig) from an s2 .pth or our ``gpt_sovits`` checkpoint (the codebook buffers,
    not model parameters, are left out)."""
    from sovits2_jax.convert.checkpoint import load_checkpoint, meta_path
    from sovits2_jax.convert.mapping import unflatten
    from sovits2_jax.convert.torch_io import tensor_to_numpy
    from sovits2_jax.models.vits2.config import VitsConfig

    src = Path(src)
    if part not in PARTS:
        raise ConversionError(f"{src}: a GPT-SoVITS s2 checkpoint holds the vits part, not {part!r}")
    if meta_path(src) is not None:
        params, meta = load_checkpoint(src)
        if meta.get("format") != NAME:
            raise ConversionError(f"{src}: checkpoint format {meta.get('format')!r} is not {NAME!r}")
        return params, VitsConfig.from_dict(meta["config"])
    obj, _ = load_pth(src)
    weight = {str(k): tensor_to_numpy(v) for k, v in obj["weight"].items()}
    config = config_from_pth(obj["config"], normalize_dict(weight))
    flat, _buffers = torch_items_to_flat(weight.items(), config, source=str(src))
    return unflatten(flat), config


def build_model(part: str, config, rngs):
    from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn

    if part not in PARTS:
        raise ConversionError(f"{NAME} builds no {part!r} (only vits)")
    return SynthesizerTrn(config, rngs=rngs)


def checkpoint_format(part: str) -> str | None:
    return NAME if part in PARTS else None


# ------------------------------------------------------------------------------------------------ config / keys
def config_from_pth(hps: Mapping, weight: Mapping[str, Any]):
    """VitsConfig from the HParams dict and the weight shapes."""
    from sovits2_jax.models.vits2.config import VitsConfig

    model = dict(hps.get("model", {}))
    data = dict(hps.get("data", {}))
    train = dict(hps.get("train", {}))
    if "enc_p.text_embedding.weight" not in weight:
        raise ConversionError("not a GPT-SoVITS s2 model: no enc_p.text_embedding.weight")
    n_symbols = int(np.shape(weight["enc_p.text_embedding.weight"])[0])
    ref_channels = int(np.shape(weight["ref_enc.spectral.0.fc.weight"])[1])
    version = {322: "v1", 732: "v2"}.get(n_symbols, str(model.get("version", "v2")))
    kw: dict[str, Any] = dict(version=version, n_symbols=n_symbols, ref_channels=ref_channels)
    for k in MODEL_HPARAMS:
        if k in model:
            kw[k] = model[k]
    kw["semantic_frame_rate"] = kw.get("semantic_frame_rate") or "25hz"
    for ours, theirs in (
        ("sampling_rate", "sampling_rate"),
        ("n_fft", "filter_length"),
        ("hop_length", "hop_length"),
        ("win_length", "win_length"),
        ("n_mel_channels", "n_mel_channels"),
    ):
        if theirs in data:
            kw[ours] = int(data[theirs])
    if "segment_size" in train:
        kw["segment_size"] = int(train["segment_size"])
    for k in ("c_mel", "c_kl"):
        if k in train:
            kw[k] = float(train[k])
    kw["with_posterior"] = any(str(k).startswith("enc_q.") for k in weight)
    return VitsConfig.from_dict(kw)


@functools.lru_cache(maxsize=4)
def abstract_model(cfg):
    """(graphdef, abstract params) of our SynthesizerTrn for ``cfg`` (cached: tracing the init takes seconds)."""
    from flax import nnx

    from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
    from sovits2_jax.parallel.sharding import split_params

    return split_params(nnx.eval_shape(lambda: SynthesizerTrn(cfg, rngs=nnx.Rngs(0))))


def _abstract_shapes(cfg) -> dict[str, tuple[int, ...]]:
    from flax import nnx

    return {k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(abstract_model(cfg)[1])).items()}


def params_from_flat(cfg, flat: Mapping[str, np.ndarray]):
    """(graphdef, params) of our SynthesizerTrn filled with ``flat`` (names and shapes checked)."""
    import copy

    import jax.numpy as jnp
    from flax import nnx

    from sovits2_jax.convert.mapping import unflatten

    graphdef, abstract = abstract_model(cfg)
    shapes = _abstract_shapes(cfg)
    missing, extra = sorted(set(shapes) - set(flat)), sorted(set(flat) - set(shapes))
    bad = [k for k in shapes if k in flat and tuple(np.shape(flat[k])) != shapes[k]]
    if missing or extra or bad:
        raise ConversionError(
            f"parameters do not fit the model: missing {missing}, unexpected {extra}, mis-shaped {bad}"
        )
    state = copy.deepcopy(abstract)
    nnx.replace_by_pure_dict(state, unflatten({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}))
    return graphdef, state


def torch_items_to_flat(
    items: Iterable[tuple[str, Any]], cfg, source: str = "<torch>"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(our flat fp32 params, codebook buffers by torch key) from torch (key, tensor) pairs; strict."""
    buffers: dict[str, np.ndarray] = {}

    def split(it):
        for k, v in normalize_weight_norm_keys(it):
            v = np.asarray(v)
            if _BUFFER.match(k):
                buffers[k] = v
            else:
                yield k, v.astype(np.float32)

    shapes = _abstract_shapes(cfg)
    flat = torch_to_ours(split(items), rules_for(shapes), shapes, source=source)
    return flat, buffers


def flat_to_torch_items(flat: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return list(ours_to_torch(flat, rules_for(flat)))


# ------------------------------------------------------------------------------------------------ conversions
def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    from sovits2_jax.convert.checkpoint import commit, staging_dir, write_checkpoint
    from sovits2_jax.convert.mapping import unflatten
    from sovits2_jax.convert.torch_io import tensor_to_numpy

    obj, header = load_pth(src)
    weight = {str(k): tensor_to_numpy(v) for k, v in obj["weight"].items()}
    cfg = config_from_pth(obj["config"], normalize_dict(weight))
    dtypes = sorted({str(v.dtype) for v in weight.values()})
    order = list(weight)
    flat, buffers = torch_items_to_flat(weight.items(), cfg, source=str(src))
    meta = dict(
        format=NAME,
        config=cfg.to_dict(),
        torch=dict(
            hparams=obj["config"],
            info=obj.get("info"),
            header=None if header is None else header.decode(),
            dtypes={k: str(v.dtype) for k, v in weight.items()} if len(dtypes) > 1 else dtypes[0],
            key_order=order,
            parametrized_weight_norm=uses_parametrized_keys(order),
            extra_keys=sorted(set(obj) - {"weight", "config", "info"}),
        ),
    )
    tmp = staging_dir(dst)
    try:
        write_checkpoint(tmp, unflatten(flat), meta)
        if buffers:
            np.savez(tmp / BUFFERS_FILE, **buffers)
        commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)


def normalize_dict(weight: Mapping[str, Any]) -> dict[str, Any]:
    return dict(normalize_weight_norm_keys(weight.items()))


def jax_to_torch(src_dir: str | Path, dst: str | Path) -> Path:
    from sovits2_jax.convert.checkpoint import load_checkpoint

    params, meta = load_checkpoint(src_dir)
    if meta.get("format") != NAME:
        raise ConversionError(f"{src_dir}: checkpoint format {meta.get('format')!r} is not {NAME!r}")
    from sovits2_jax.models.vits2.config import VitsConfig

    cfg = VitsConfig.from_dict(meta["config"])
    if (cfg.content, cfg.flow, cfg.position, cfg.text_input) != ("hubert_vq", "wavenet", "relative", "ids"):
        hint = "; python -m sovits2_jax.convert.vits_grvq writes its state dict" if cfg.content == "ssl_grvq" else ""
        raise ConversionError(
            f"{src_dir}: the {cfg.version} layout (content={cfg.content}, flow={cfg.flow}, position={cfg.position}, "
            f"text_input={cfg.text_input}) has no GPT-SoVITS SynthesizerTrn equivalent to write as .pth{hint}"
        )
    tmeta = meta.get("torch", {})
    items = dict(flat_to_torch_items(flatten(params)))
    buffers_path = Path(src_dir) / BUFFERS_FILE
    if buffers_path.is_file():
        with np.load(buffers_path) as z:
            items.update({k: z[k] for k in z.files})
    else:  # trained here: no EMA state travelled with the params
        items.update(_codebook_buffers(items))
    if tmeta.get("parametrized_weight_norm"):
        items = dict(to_parametrized_keys(items.items()))
    dtypes = tmeta.get("dtypes", "float16")
    weight = {}
    order = [k for k in tmeta.get("key_order", []) if k in items] + sorted(set(items) - set(tmeta.get("key_order", [])))
    import torch

    for k in order:
        dt = dtypes.get(k, "float32") if isinstance(dtypes, dict) else dtypes
        weight[k] = torch.from_numpy(np.ascontiguousarray(items[k]).astype(np.dtype(dt)))
    hparams = tmeta.get("hparams") or _default_hparams(meta["config"])
    obj = {"weight": weight, "config": hparams, "info": tmeta.get("info") or "converted by sovits2-jax"}
    header = tmeta.get("header")
    save_pth(obj, dst, None if header is None else header.encode())
    return Path(dst)


def _codebook_buffers(items: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EuclideanCodebook's EMA buffers for codebooks that have none: initialised (no k-means on load), unit cluster
    sizes and ``embed_avg = embed``, the EMA state whose normalised average is the codebook itself."""
    out = {}
    for key, embed in items.items():
        if key.startswith("quantizer.") and key.endswith("._codebook.embed"):
            prefix = key[: -len("embed")]
            out[prefix + "inited"] = np.ones((1,), np.float32)
            out[prefix + "cluster_size"] = np.ones((embed.shape[0],), np.float32)
            out[prefix + "embed_avg"] = np.array(embed, np.float32)
    return out


def _default_hparams(config: Mapping[str, Any]) -> dict:
    """A GPT-SoVITS-style hps dict for a checkpoint that did not come from a .pth (e.g. trained here)."""
    return {
        "data": {
            "sampling_rate": config["sampling_rate"],
            "filter_length": config["n_fft"],
            "hop_length": config["hop_length"],
            "win_length": config["win_length"],
            "n_mel_channels": config["n_mel_channels"],
            "n_speakers": 300,
            "add_blank": True,
        },
        "train": {"segment_size": config["segment_size"], "c_mel": config["c_mel"], "c_kl": config["c_kl"]},
        "model": {k: config[k] for k in MODEL_HPARAMS}
        | {"version": config["version"], "freeze_quantizer": True, "use_spectral_norm": False},
    }
