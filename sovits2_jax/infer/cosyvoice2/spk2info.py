"""``spk2info.pt`` in CosyVoice's layout: ``{speaker id: {name: tensor}}`` saved with ``torch.save``.

An sft speaker is ``{"embedding": [1, D] float32}``; a zero-shot speaker (``add_zero_shot_spk``) is the zero-shot
model input minus the text: ``prompt_text`` [1, Lp] int32 with ``prompt_text_len`` [1], the same pairs for
``llm_prompt_speech_token`` and ``flow_prompt_speech_token``, ``prompt_speech_feat`` [1, 2Lf, 80] float32 with
``prompt_speech_feat_len``, and ``llm_embedding`` / ``flow_embedding`` [1, D]. Files are read with
``torch.load(weights_only=True)`` (plain tensors only). torch is imported here and nowhere else in inference.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from sovits2_jax.infer.cosyvoice2.inputs import ModelInput

TOKEN_FIELDS = ("prompt_text", "llm_prompt_speech_token", "flow_prompt_speech_token")


class Spk2InfoError(ValueError):
    """An unreadable or malformed spk2info file."""


def _torch():
    try:
        import torch
    except ModuleNotFoundError as e:
        raise Spk2InfoError("spk2info.pt is a torch file: reading or writing it needs torch installed") from e
    return torch


def _array(entry: Mapping, key: str, spk: str, path) -> np.ndarray:
    value = entry[key]
    try:
        return value.detach().cpu().float().numpy() if key.endswith(("embedding", "feat")) else value.cpu().numpy()
    except AttributeError as e:
        raise Spk2InfoError(f"{path}: speaker {spk!r}: {key} is {type(value).__name__}, not a tensor") from e


def entry_from_torch(entry: Mapping, spk: str = "?", path: str | os.PathLike = "spk2info") -> ModelInput:
    """One speaker's dict of tensors -> ModelInput (no text)."""
    if not isinstance(entry, Mapping):
        raise Spk2InfoError(f"{path}: speaker {spk!r} is a {type(entry).__name__}, not a dict of tensors")
    if "embedding" in entry and "flow_embedding" not in entry:
        emb = _array(entry, "embedding", spk, path).reshape(-1)
        return ModelInput(llm_embedding=emb, flow_embedding=emb)
    if "flow_embedding" not in entry:
        raise Spk2InfoError(f"{path}: speaker {spk!r} has neither 'embedding' nor 'flow_embedding' ({sorted(entry)})")
    fields = {k: _array(entry, k, spk, path).reshape(-1) for k in TOKEN_FIELDS if k in entry}
    if "prompt_speech_feat" in entry:
        fields["prompt_speech_feat"] = _array(entry, "prompt_speech_feat", spk, path).reshape(-1, 80)
    flow_emb = _array(entry, "flow_embedding", spk, path).reshape(-1)
    llm_emb = _array(entry, "llm_embedding", spk, path).reshape(-1) if "llm_embedding" in entry else flow_emb
    return ModelInput(**fields, llm_embedding=llm_emb, flow_embedding=flow_emb)


def entry_to_torch(mi: ModelInput) -> dict:
    """ModelInput -> one speaker's dict of tensors (sft layout when it carries no prompt)."""
    torch = _torch()

    def ints(x):
        return torch.tensor(np.asarray(x, np.int32)[None], dtype=torch.int32)

    def length(x):
        return torch.tensor([len(x)], dtype=torch.int32)

    if mi.flow_prompt_speech_token.size == 0:
        return {"embedding": torch.from_numpy(np.asarray(mi.flow_embedding, np.float32)[None].copy())}
    out = {}
    for name in TOKEN_FIELDS:
        out[name], out[f"{name}_len"] = ints(getattr(mi, name)), length(getattr(mi, name))
    out["prompt_speech_feat"] = torch.from_numpy(np.asarray(mi.prompt_speech_feat, np.float32)[None].copy())
    out["prompt_speech_feat_len"] = length(mi.prompt_speech_feat)
    out["llm_embedding"] = torch.from_numpy(np.asarray(mi.llm_embedding, np.float32)[None].copy())
    out["flow_embedding"] = torch.from_numpy(np.asarray(mi.flow_embedding, np.float32)[None].copy())
    return out


def load(path: str | os.PathLike) -> dict[str, ModelInput]:
    """Speaker id -> ModelInput from a CosyVoice ``spk2info.pt`` (read with weights_only=True)."""
    torch = _torch()
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or non-tensor pickles
        raise Spk2InfoError(f"{path}: unreadable spk2info ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e
    if not isinstance(data, Mapping):
        raise Spk2InfoError(f"{path}: expected a dict of speakers, got {type(data).__name__}")
    return {str(spk): entry_from_torch(entry, str(spk), path) for spk, entry in data.items()}


def save(path: str | os.PathLike, speakers: Mapping[str, ModelInput]) -> None:
    """Writes ``speakers`` in CosyVoice's layout (to a temporary name, then renamed)."""
    torch = _torch()
    tmp = f"{path}.tmp"
    torch.save({str(spk): entry_to_torch(mi) for spk, mi in speakers.items()}, tmp)
    os.replace(tmp, path)
