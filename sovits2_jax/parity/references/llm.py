"""Parity component ``llm``: cosyvoice's ``Qwen2LM`` vs our SpeechLM converted from the same ``llm.pt``.

Inputs are the reference forward's batch (``text_token``, ``text_token_len``, ``speech_token``,
``speech_token_len``) plus ``bistream_uniform``: the values the reference's ``random.random()`` returns, one
per row (patched in), so both sides build the same uni/bistream sequences. Outputs: loss, acc, the decoder
logits on each row's real positions (padding zeroed) and the targets.

``src`` is a CosyVoice2 model directory (cosyvoice2.yaml, llm.pt, CosyVoice-BlankEN/) or None for a tiny
random-init reference written to a temp directory (``write_tiny_model_dir``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from sovits2_jax.convert import cosyvoice2_llm
from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.models.speech_lm import SpeechLMConfig
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.random_reference import save_random_hf_qwen2
from sovits2_jax.parity.references.qwen2 import TINY
from sovits2_jax.parity.torch_refs import import_cosyvoice, to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("llm",)

TINY_BACKBONE = dataclasses.replace(TINY, tie_word_embeddings=True)
TINY_SPEECH_TOKENS = 100
BLANK_EN = "CosyVoice-BlankEN"

TINY_YAML = """# tiny CosyVoice2-style config written by sovits2_jax.parity.references.llm
__set_seed1: !apply:random.seed [1986]
llm_input_size: {hidden}
llm_output_size: {hidden}
qwen_pretrain_path: ''

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {speech}
    length_normalized_loss: True
    lsm_weight: {lsm}
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1
"""


def reference_model(config: SpeechLMConfig, backbone_dir: str | Path):
    """cosyvoice ``Qwen2LM`` with a ``Qwen2Encoder`` loaded from ``backbone_dir`` (random other weights)."""
    import_cosyvoice()
    from cosyvoice.llm.llm import Qwen2Encoder, Qwen2LM
    from cosyvoice.utils.common import ras_sampling

    d = config.backbone.hidden_size
    return Qwen2LM(
        llm_input_size=d,
        llm_output_size=d,
        speech_token_size=config.speech_token_size,
        llm=Qwen2Encoder(str(backbone_dir)),
        sampling=ras_sampling,
        length_normalized_loss=config.length_normalized_loss,
        lsm_weight=config.lsm_weight,
        mix_ratio=list(config.mix_ratio),
    )


def write_tiny_model_dir(
    directory: str | Path,
    *,
    seed: int = 0,
    backbone: Qwen2Config = TINY_BACKBONE,
    speech_token_size: int = TINY_SPEECH_TOKENS,
    lsm_weight: float = 0.0,
    training_entries: bool = False,
) -> Path:
    """A CosyVoice2-layout directory with a random tiny Qwen2LM: cosyvoice2.yaml, llm.pt, CosyVoice-BlankEN/.

    ``training_entries`` adds the integer ``epoch``/``step`` entries training checkpoints carry.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_random_hf_qwen2(directory / BLANK_EN, backbone, seed=seed)
    config = SpeechLMConfig(backbone=backbone, speech_token_size=speech_token_size, lsm_weight=lsm_weight)
    torch.manual_seed(seed + 1)
    ref = reference_model(config, directory / BLANK_EN)
    with torch.no_grad():
        ref.llm_decoder.bias.normal_(0.0, 0.5)
    state = ref.state_dict()
    if training_entries:
        state.update(epoch=3, step=1234)
    torch.save(state, directory / "llm.pt")
    yaml = TINY_YAML.format(hidden=backbone.hidden_size, speech=speech_token_size, lsm=lsm_weight)
    (directory / "cosyvoice2.yaml").write_text(yaml)
    return directory


def read_model_dir(src: str | Path, **backbone_overrides) -> SpeechLMConfig:
    src = Path(src)
    cfg = load_hyperpyyaml(src / "cosyvoice2.yaml", overrides={"qwen_pretrain_path": str(src / BLANK_EN)})
    return cosyvoice2_llm.config_from_yaml(cfg, **backbone_overrides)


def make_inputs(
    text_vocab: int, speech_vocab: int, seed: int, text_lens=(60, 47, 13, 30), speech_lens=(250, 180, 280, 40)
) -> dict[str, np.ndarray]:
    """Padded token batch; rows 0 and 2 qualify for bistream and draw it, rows 1 and 3 stay unistream."""
    rng = np.random.default_rng(seed)
    b = len(text_lens)
    text = np.zeros((b, max(text_lens)), np.int64)
    speech = np.zeros((b, max(speech_lens)), np.int64)
    for i, (lt, ls) in enumerate(zip(text_lens, speech_lens)):
        text[i, :lt] = rng.integers(0, text_vocab, lt)
        speech[i, :ls] = rng.integers(0, speech_vocab, ls)
    uniform = np.asarray([0.2, 0.7, 0.1, 0.3][:b] + [0.4] * max(0, b - 4), np.float64)
    return dict(
        text_token=text,
        text_token_len=np.asarray(text_lens, np.int64),
        speech_token=speech,
        speech_token_len=np.asarray(speech_lens, np.int64),
        bistream_uniform=uniform,
    )


@contextlib.contextmanager
def replayed_draws(values):
    """Makes the reference's ``random.random()`` return ``values`` in order."""
    from unittest import mock

    import cosyvoice.llm.llm as llm_module

    queue = [float(v) for v in values]

    class _Random:
        @staticmethod
        def random():
            if not queue:
                raise RuntimeError("the reference drew more random numbers than provided")
            return queue.pop(0)

    with mock.patch.object(llm_module, "random", _Random()):
        yield


def reference_outputs(ref, inputs: dict, device: str = "cpu") -> dict[str, np.ndarray]:
    """Runs ``Qwen2LM.forward`` (loss, acc) and its own pieces (logits, targets) with the given draws."""
    import torch

    batch = {
        k: to_torch(inputs[k], device) for k in ("text_token", "text_token_len", "speech_token", "speech_token_len")
    }
    with torch.no_grad():
        with replayed_draws(inputs["bistream_uniform"]):
            out = ref.forward(dict(batch), torch.device(device))
        with replayed_draws(inputs["bistream_uniform"]):
            text_emb = ref.llm.model.model.embed_tokens(batch["text_token"])
            speech_emb = ref.speech_embedding(batch["speech_token"])
            target, lm_input, lm_len = ref.prepare_lm_input_target(
                batch["text_token"],
                text_emb,
                batch["text_token_len"],
                batch["speech_token"],
                speech_emb,
                batch["speech_token_len"],
            )
            hidden, _ = ref.llm(lm_input, lm_len.to(device))
            logits = ref.llm_decoder(hidden)
    valid = torch.arange(logits.shape[1], device=logits.device)[None, :] < lm_len.to(device)[:, None]
    logits = logits.float() * valid[..., None]
    return dict(
        loss=to_numpy(out["loss"].float()),
        acc=to_numpy(out["acc"].float()),
        logits=to_numpy(logits),
        targets=to_numpy(target).astype(np.float32),
    )


def jax_forward(graphdef, params, inputs: dict) -> dict[str, np.ndarray]:
    """Our cosyvoice2_forward on the same batch, cropped to the reference's padded length."""
    outputs = _jit_forward(graphdef)(
        params,
        {k: np.asarray(inputs[k]) for k in ("text_token", "text_token_len", "speech_token", "speech_token_len")},
        np.asarray(inputs["bistream_uniform"]) < 0.5,
    )
    lengths = np.asarray(outputs["lengths"])
    t = int(lengths.max())
    valid = np.arange(t)[None, :] < lengths[:, None]
    logits = np.asarray(outputs["logits"], np.float32)[:, :t] * valid[..., None]
    return dict(
        loss=np.asarray(outputs["loss"], np.float32),
        acc=np.asarray(outputs["acc"], np.float32),
        logits=logits,
        targets=np.asarray(outputs["targets"])[:, :t].astype(np.float32),
    )


_JITTED: dict = {}


def _jit_forward(graphdef):
    import jax
    from flax import nnx

    from sovits2_jax.models.speech_lm import cosyvoice2_forward

    if graphdef not in _JITTED:

        @jax.jit
        def forward(params, batch, draw):
            out = cosyvoice2_forward(nnx.merge(graphdef, params), batch, draw)
            return {k: out[k] for k in ("loss", "acc", "logits", "targets", "lengths")}

        _JITTED[graphdef] = forward
    return _JITTED[graphdef]


def build(src: str | None, *, component: str = "llm", device="cpu", dtype="float32", seed=0, **kw) -> ParityCase:
    import jax
    import torch
    from flax import nnx

    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.speech_lm import SpeechLM

    if src is None:
        src = write_tiny_model_dir(tempfile.mkdtemp(prefix="cosyvoice2-llm-ref-"), seed=seed)
    src = Path(src)
    config = read_model_dir(src, dtype=dtype)
    nested = cosyvoice2_llm.load_llm_pt(src / "llm.pt", config)
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    with jax.default_device(jax_device):
        graphdef, params = params_from_flat(lambda: SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))

    tdev = torch_device(device)
    ref = reference_model(config, src / BLANK_EN)
    state = dict(torch.load(src / "llm.pt", map_location="cpu", weights_only=True))
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    ref.load_state_dict(state, strict=True)
    ref = ref.to(tdev).to(getattr(torch, dtype)).eval()

    inputs = make_inputs(config.backbone.vocab_size, config.speech_token_size, seed, **kw)

    def run_jax(inputs):
        with jax.default_device(jax_device):
            return jax_forward(graphdef, params, inputs)

    return ParityCase(
        inputs,
        lambda inputs: reference_outputs(ref, inputs, tdev),
        run_jax,
        atol=MODEL_ATOL,
        info={"config": config.to_dict(), "src": str(src)},
    )
