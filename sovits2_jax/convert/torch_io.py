"""Streaming readers and atomic writers for PyTorch checkpoint files (.pt/.bin/.pth, .safetensors).

Tensors are yielded one at a time as numpy arrays with their dtype preserved (bfloat16 through ml_dtypes).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from sovits2_jax.convert.mapping import ConversionError

log = logging.getLogger(__name__)


def tensor_to_numpy(t) -> np.ndarray:
    """torch.Tensor -> numpy, keeping bfloat16 (as ml_dtypes.bfloat16)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def numpy_to_tensor(a: np.ndarray):
    import torch

    a = np.asarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def _iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    try:
        import torch  # noqa: F401

        framework = "pt"
    except ImportError:
        framework = "numpy"
    try:
        f = safe_open(str(path), framework=framework)
        keys = list(f.keys())
    except Exception as e:
        raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e
    for key in keys:
        try:
            value = f.get_tensor(key)
        except Exception as e:
            raise ConversionError(
                f"{path}: tensor {key!r} cannot be read, the file may be truncated ({e})"
            ) from e
        yield key, tensor_to_numpy(value) if framework == "pt" else value


def load_torch_object(path: str | Path):
    """torch.load with mmap and weights_only where the file allows; errors name the file."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as mmap_error:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConversionError(f"{path}: not a loadable PyTorch checkpoint ({e or mmap_error})") from e


def iter_state_dict(obj, source: str = "<state_dict>") -> Iterator[tuple[str, np.ndarray]]:
    """Tensor entries of a (possibly wrapped) state dict; non-tensor entries such as epoch/step are skipped."""
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{source}: expected a state dict, found {type(obj).__name__}")
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            yield key, tensor_to_numpy(value)
        else:
            log.debug("%s: skipping non-tensor entry %s", source, key)


def iter_torch_file(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Streams (key, array) from a .safetensors or a torch.save'd state dict (.pt/.bin/.pth)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        yield from _iter_safetensors(path)
    else:
        yield from iter_state_dict(load_torch_object(path), str(path))


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    return dict(iter_torch_file(path))


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def save_torch_state_dict(
    items: Iterable[tuple[str, np.ndarray]], path: str | Path, extra: dict | None = None
):
    """torch.save of {key: tensor} (plus ``extra`` plain entries), written to a temp file then renamed."""
    import torch

    path = Path(path)
    state = {k: numpy_to_tensor(v) for k, v in items}
    if extra:
        state.update(extra)
    tmp = _atomic_target(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_safetensors(items: Iterable[tuple[str, np.ndarray]], path: str | Path, metadata=None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: numpy_to_tensor(v).contiguous() for k, v in items}
    tmp = _atomic_target(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata or {"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def iter_hf_weights(directory: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Streams the weights of a HF model directory: safetensors (single or sharded) or pytorch_model.bin."""
    d = Path(directory)
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = d / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise ConversionError(f"{index}: not a valid shard index ({e})") from e
            for shard in sorted(set(weight_map.values())):
                yield from iter_torch_file(d / shard)
            return
        if (d / single).is_file():
            yield from iter_torch_file(d / single)
            return
    raise ConversionError(f"{d}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json) found")


def save_hf_weights(
    items: Iterable[tuple[str, np.ndarray]], directory: str | Path, max_shard_bytes: int = 4 << 30
) -> list[str]:
    """Writes safetensors shards (with an index when more than one) into ``directory``; returns file names."""
    d = Path(directory)
    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for key, value in items:
        if shards[-1] and size + value.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((key, value))
        size += value.nbytes
    if len(shards) == 1:
        save_safetensors(shards[0], d / "model.safetensors")
        return ["model.safetensors"]
    names, weight_map, total = [], {}, 0
    for n, shard in enumerate(shards, 1):
        name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(shard, d / name)
        names.append(name)
        for key, value in shard:
            weight_map[key] = name
            total += value.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names
