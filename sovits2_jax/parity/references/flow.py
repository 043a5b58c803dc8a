"""Parity components ``flow.encoder``, ``flow.estimator`` and ``flow`` against cosyvoice-minicpmo's modules.

Without ``src`` a random-init reference is built at the real CosyVoice2 size (``size="real"``, the default) or a
tiny one; with ``src`` (a CosyVoice2 model directory or a flow.pt) the real weights are used with the real config.
Biases and norm scales are randomised too, so a converter that drops or swaps them cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.configs.flow import named_config
from sovits2_jax.convert import cosyvoice2_flow
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.torch_refs import config_kwargs, import_cosyvoice, to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("flow.encoder", "flow.estimator", "flow")

def reference_config(size: str) -> FlowConfig:
    return named_config(size)


def build_reference(config: FlowConfig, seed: int = 0):
    """A random-init torch CausalMaskedDiffWithXvec with ``config``'s sizes (eval mode)."""
    import torch

    import_cosyvoice()
    from cosyvoice.flow.decoder import CausalConditionalDecoder
    from cosyvoice.flow.flow import CausalMaskedDiffWithXvec
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.transformer.upsample_encoder import UpsampleConformerEncoder
    from omegaconf import DictConfig

    enc, est, c = config.encoder, config.estimator, config.cfm
    if enc.output_size != 512 or enc.num_up_blocks != 4 or enc.pre_lookahead_len != 3 or config.output_size != 80:
        raise ValueError("the torch reference hard-codes a 512-wide encoder, 4 up-blocks, lookahead 3 and 80 mels")
    torch.manual_seed(seed)
    encoder = UpsampleConformerEncoder(
        **config_kwargs(
            enc,
            "input_size output_size attention_heads linear_units num_blocks dropout_rate positional_dropout_rate "
            "attention_dropout_rate static_chunk_size key_bias",
        ),
        normalize_before=True,
        input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn",
        use_cnn_module=False,
        macaron_style=False,
    )
    estimator = CausalConditionalDecoder(
        **config_kwargs(
            est,
            "in_channels out_channels channels attention_head_dim n_blocks num_mid_blocks num_heads "
            "static_chunk_size num_decoding_left_chunks",
        ),
        dropout=0.0,
        act_fn="gelu",
    )
    cfm_params = DictConfig(
        {
            "sigma_min": c.sigma_min,
            "solver": "euler",
            "t_scheduler": c.t_scheduler,
            "training_cfg_rate": c.training_cfg_rate,
            "inference_cfg_rate": c.inference_cfg_rate,
            "reg_loss_type": "l1",
        }
    )
    decoder = CausalConditionalCFM(
        in_channels=240, cfm_params=cfm_params, n_spks=1, spk_emb_dim=config.output_size, estimator=estimator
    )
    flow = CausalMaskedDiffWithXvec(
        **config_kwargs(config, "input_size output_size spk_embed_dim vocab_size token_mel_ratio"),
        input_frame_rate=25,
        pre_lookahead_len=enc.pre_lookahead_len,
        encoder=encoder,
        decoder=decoder,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith("bias") or "norm" in name or name.endswith(("block.2.weight", "out.1.weight")):
                is_scale = name.endswith("weight")
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if is_scale else 0.0))
    return flow.eval()


def load_reference_weights(src: str | Path):
    """(config, flow.pt items) from a CosyVoice2 model directory or a flow.pt file."""
    from sovits2_jax.convert.torch_io import iter_torch_file

    src = Path(src)
    pt = src / "flow.pt" if src.is_dir() else src
    config = cosyvoice2_flow.default_config()
    if (pt.parent / "cosyvoice2.yaml").exists():
        from sovits2_jax.convert.cosyvoice2 import read_yaml

        config = cosyvoice2_flow.config_from_yaml(read_yaml(pt.parent))
    return config, list(iter_torch_file(pt))


def _ours(config: FlowConfig, items, jax_device):
    import jax

    from sovits2_jax.models.flow import CausalMaskedDiffWithXvec

    nested = cosyvoice2_flow.torch_to_params(items, config)
    with jax.default_device(jax_device):
        return params_from_flat(lambda: CausalMaskedDiffWithXvec(config, rngs=None), flatten(nested))


_SETUPS: dict = {}


def _setup(src, *, size, device, seed, config_overrides=None):
    """(config, torch reference, torch device, graphdef, params, jax device); kept for reuse within a process."""
    key = (src, size, device, seed, tuple(sorted((config_overrides or {}).items())))
    if key not in _SETUPS:
        _SETUPS.clear()  # hold one reference pair at a time (a real-size pair is ~1 GB)
        _SETUPS[key] = _make_setup(src, size=size, device=device, seed=seed, config_overrides=config_overrides)
    return _SETUPS[key]


def _make_setup(src, *, size, device, seed, config_overrides=None):
    import dataclasses

    import jax

    if src is None:
        config = reference_config(size)
        if config_overrides:
            config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, **config_overrides))
        ref = build_reference(config, seed)
        items = [(k, to_numpy(v)) for k, v in ref.state_dict().items()]
    else:
        config, items = load_reference_weights(src)
        if config_overrides:
            config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, **config_overrides))
        ref = build_reference(config, seed)
        import torch

        ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in items if k not in ("epoch", "step")})
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    graphdef, params = _ours(config, items, jax_device)
    tdev = torch_device(device)
    return config, ref.to(tdev), tdev, graphdef, params, jax_device, {}


def _lengths(batch: int, length: int, step: int) -> np.ndarray:
    return np.array([length - step * b for b in range(batch)], np.int64)


DTYPES = ("float32",)  # the reference flow has no bf16 path to compare against


def build(
    src: str | None, *, component: str = "flow", device: str = "cpu", dtype: str = "float32", seed: int = 0, **kw
) -> ParityCase:
    """The case of ``component``; ``kw``: ``size`` ("real" or "tiny"), ``batch``, ``tokens``, ``streaming``, and
    ``finalize`` (``flow`` only)."""
    if dtype != "float32":
        raise ValueError(f"flow parity runs in float32 only (got dtype={dtype!r})")
    builders = {"flow.encoder": _encoder_case, "flow.estimator": _estimator_case, "flow": _flow_case}
    if component not in builders:
        raise ValueError(f"unknown flow parity component {component!r}")
    return builders[component](src, device=device, seed=seed, **kw)


def _encoder_case(src, *, device, seed, size="real", batch=2, tokens=100, streaming=True) -> ParityCase:
    """UpsampleConformerEncoder on a padded batch (reference padding semantics: no zeroing before lookahead)."""
    import jax
    import torch

    config, ref, tdev, graphdef, params, jax_device, fns = _setup(
        src, size=size, device=device, seed=seed, config_overrides={"zero_padding_before_lookahead": False}
    )
    rng = np.random.default_rng(seed)
    inputs = {
        "xs": rng.standard_normal((batch, tokens, config.input_size)).astype(np.float32),
        "xs_lens": _lengths(batch, tokens, 7),
        "streaming": np.array(streaming),
    }

    def encode(params, xs, lens, streaming):
        return nnx.merge(graphdef, params).encoder(xs, lens, streaming=streaming)

    forward = fns.setdefault("encoder", jax.jit(encode))

    def run_torch(x):
        with torch.no_grad():
            h, masks = ref.encoder(
                to_torch(x["xs"], tdev), to_torch(x["xs_lens"], tdev), streaming=bool(x["streaming"])
            )
        return {"xs": to_numpy(h), "masks": to_numpy(masks[:, 0]).astype(np.float32)}

    def run_jax(x):
        with jax.default_device(jax_device):
            h, valid = forward(params, x["xs"], x["xs_lens"], bool(x["streaming"]))
        return {"xs": np.asarray(h), "masks": np.asarray(valid, np.float32)}

    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, rtol=1e-4, info={"config": config.to_dict()})


def estimator_inputs(config: FlowConfig, batch: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = config.output_size
    lens = _lengths(batch, frames, 13)
    mask = (np.arange(frames)[None, :] < lens[:, None]).astype(np.float32)[:, None, :]
    cond = rng.standard_normal((batch, m, frames)).astype(np.float32)
    cond[..., frames // 4 :] = 0.0
    return {
        "x": rng.standard_normal((batch, m, frames)).astype(np.float32),
        "mask": mask,
        "mu": rng.standard_normal((batch, m, frames)).astype(np.float32),
        "t": rng.uniform(size=(batch,)).astype(np.float32),
        "spks": rng.standard_normal((batch, m)).astype(np.float32),
        "cond": cond,
    }


def _estimator_case(src, *, device, seed, size="real", batch=2, tokens=100, streaming=True) -> ParityCase:
    """CausalConditionalDecoder on torch-layout inputs (x, mask, mu, t, spks, cond, streaming)."""
    import jax
    import torch

    config, ref, tdev, graphdef, params, jax_device, fns = _setup(src, size=size, device=device, seed=seed)
    inputs = estimator_inputs(config, batch, config.token_mel_ratio * tokens, seed)
    inputs["streaming"] = np.array(streaming)

    def estimate(params, x, mask, mu, t, spks, cond, streaming):
        est = nnx.merge(graphdef, params).estimator
        tr = lambda a: a.transpose(0, 2, 1)
        return tr(est(tr(x), mask[:, 0], tr(mu), t, spks, tr(cond), streaming=streaming))

    forward = fns.setdefault("estimator", jax.jit(estimate))

    def run_torch(x):
        args = [to_torch(x[k], tdev) for k in ("x", "mask", "mu", "t", "spks", "cond")]
        with torch.no_grad():
            out = ref.decoder.estimator(*args, streaming=bool(x["streaming"]))
        return {"output": to_numpy(out)}

    def run_jax(x):
        with jax.default_device(jax_device):
            out = forward(params, *(x[k] for k in ("x", "mask", "mu", "t", "spks", "cond")), bool(x["streaming"]))
        return {"output": np.asarray(out)}

    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, rtol=1e-4, info={"config": config.to_dict()})


def flow_inputs(config: FlowConfig, tokens: int, prompt_tokens: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ratio, m = config.token_mel_ratio, config.output_size
    frames = ratio * (tokens + prompt_tokens)
    return {
        "token": rng.integers(0, config.vocab_size, (1, tokens)).astype(np.int64),
        "token_len": np.array([tokens], np.int64),
        "prompt_token": rng.integers(0, config.vocab_size, (1, prompt_tokens)).astype(np.int64),
        "prompt_token_len": np.array([prompt_tokens], np.int64),
        "prompt_feat": rng.standard_normal((1, ratio * prompt_tokens, m)).astype(np.float32) * 2.0 - 5.0,
        "prompt_feat_len": np.array([ratio * prompt_tokens], np.int64),
        "embedding": rng.standard_normal((1, config.spk_embed_dim)).astype(np.float32),
        "noise": rng.standard_normal((1, m, frames)).astype(np.float32),
    }


def _flow_case(src, *, device, seed, size="real", tokens=100, streaming=True, finalize=True) -> ParityCase:
    """Full 10-step CFG inference (batch 1, as the reference) with the given noise as the fixed initial sample."""
    import jax
    import torch

    config, ref, tdev, graphdef, params, jax_device, fns = _setup(src, size=size, device=device, seed=seed)
    prompt = max(tokens // 4, 4)
    inputs = flow_inputs(config, tokens, prompt, seed)
    inputs["streaming"], inputs["finalize"] = np.array(streaming), np.array(finalize)

    def forward(params, x, streaming, finalize):
        model = nnx.merge(graphdef, params)
        mel, lengths = model.inference(
            x["token"],
            x["token_len"],
            x["prompt_token"],
            x["prompt_token_len"],
            x["prompt_feat"],
            x["prompt_feat_len"],
            x["embedding"],
            x["noise"].transpose(0, 2, 1),
            streaming=streaming,
            finalize=finalize,
        )
        return mel.transpose(0, 2, 1), lengths

    forward_jit = fns.setdefault("flow", jax.jit(forward))

    def run_torch(x):
        ref.decoder.rand_noise = to_torch(x["noise"], tdev)
        names = (
            "token",
            "token_len",
            "prompt_token",
            "prompt_token_len",
            "prompt_feat",
            "prompt_feat_len",
            "embedding",
        )
        with torch.no_grad():
            feat, _ = ref.inference(
                *(to_torch(x[k], tdev) for k in names),
                streaming=bool(x["streaming"]),
                finalize=bool(x["finalize"]),
            )
        return {"feat": to_numpy(feat)}

    def run_jax(x):
        arrays = {k: v for k, v in x.items() if k not in ("streaming", "finalize")}
        with jax.default_device(jax_device):
            mel, lengths = forward_jit(params, arrays, bool(x["streaming"]), bool(x["finalize"]))
        n = int(lengths[0])
        return {"feat": np.asarray(mel)[:, :, :n]}

    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, rtol=1e-4, info={"config": config.to_dict()})


def loss_case(
    src: str | None = None, *, device: str = "cpu", seed: int = 0, size: str = "tiny", batch: int = 2, tokens: int = 50
) -> ParityCase:
    """Training loss (CausalMaskedDiffWithXvec.forward in eval mode, i.e. without dropout) with the reference's
    random draws (python ``random`` for streaming and the prompt prefix, torch for t, noise and CFG dropout)
    replayed from the same seed and handed to ours explicitly. Padded rows use the reference's padding semantics.
    """
    import random

    import jax
    import torch

    config, ref, tdev, graphdef, params, jax_device, fns = _setup(
        src, size=size, device=device, seed=seed, config_overrides={"zero_padding_before_lookahead": False}
    )
    rng = np.random.default_rng(seed)
    ratio, m = config.token_mel_ratio, config.output_size
    token_len = _lengths(batch, tokens, 9)
    inputs = {
        "speech_token": rng.integers(0, config.vocab_size, (batch, tokens)).astype(np.int64),
        "speech_token_len": token_len,
        "speech_feat": rng.standard_normal((batch, ratio * tokens, m)).astype(np.float32),
        "speech_feat_len": ratio * token_len,
        "embedding": rng.standard_normal((batch, config.spk_embed_dim)).astype(np.float32),
    }

    def draws(x) -> dict[str, np.ndarray]:
        random.seed(seed)
        streaming = random.random() < 0.5
        prefix = []
        for j in x["speech_feat_len"]:
            prefix.append(0 if random.random() < 0.5 else random.randint(0, int(np.float32(0.3) * np.float32(j))))
        torch.manual_seed(seed)
        b, t = x["speech_feat"].shape[:2]
        tt = torch.rand([b, 1, 1])
        z = torch.randn([b, m, t])
        keep = torch.rand(b) > config.cfm.training_cfg_rate
        return {
            "streaming": np.array(streaming),
            "cond_lengths": np.array(prefix, np.int32),
            "t": to_numpy(tt)[:, 0, 0],
            "noise": to_numpy(z).transpose(0, 2, 1),
            "keep_cond": to_numpy(keep),
        }

    def run_torch(x):
        random.seed(seed)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = ref.forward({k: to_torch(v, tdev) for k, v in x.items()}, tdev)
        return {"loss": np.asarray(to_numpy(out["loss"]), np.float32)}

    def loss(params, batch, d):
        model = nnx.merge(graphdef, params)
        return model.loss_with_draws(batch, **d)

    forward = fns.setdefault("loss", jax.jit(loss))

    def run_jax(x):
        d = draws(x)
        with jax.default_device(jax_device):
            value = forward(params, {k: np.asarray(v) for k, v in x.items()}, d)
        return {"loss": np.asarray(value, np.float32)}

    return ParityCase(inputs, run_torch, run_jax, atol=1e-5, rtol=1e-4, info={"config": config.to_dict()})
