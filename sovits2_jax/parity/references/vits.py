"""Parity component ``vits``: GPT-SoVITS ``SynthesizerTrn.decode(codes, text, refer, noise_scale)`` (PyTorch,
gpt-sovits-infer) against ours on identical weights. Also the shared helpers the sub-module parity tests use:
a random reference at the released s2 sizes with every parameter and buffer perturbed (``perturb_``), and its
conversion into our model."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("vits",)

def torch_kwargs(cfg) -> dict:
    """SynthesizerTrn constructor arguments for a VitsConfig (hps.model-style)."""
    from sovits2_jax.parity.torch_refs import config_kwargs

    return dict(
        **config_kwargs(
            cfg,
            "spec_channels inter_channels hidden_channels filter_channels n_heads n_layers kernel_size p_dropout "
            "resblock resblock_kernel_sizes resblock_dilation_sizes upsample_rates upsample_initial_channel "
            "upsample_kernel_sizes gin_channels semantic_frame_rate",
        ),
        segment_size=cfg.segment_size // cfg.hop_length,
        freeze_quantizer=True,
    )


def make_torch_reference(cfg, seed: int = 0, *, perturb: bool = True):
    """A random-init gpt-sovits-infer SynthesizerTrn at ``cfg``'s sizes (v2 text table / 704-bin reference
    encoder swapped in as GPT-SoVITS v2 has them), eval mode; ``perturb``: every state-dict tensor perturbed
    (``perturb_``). The same ``seed`` with ``perturb=False`` gives the fresh-init model."""
    import torch

    from sovits2_jax.parity.torch_refs import import_gpt_sovits

    models = import_gpt_sovits()
    modules = import_gpt_sovits("gpt_sovits.module.modules")
    torch.manual_seed(seed)
    model = models.SynthesizerTrn(**torch_kwargs(cfg))
    if model.enc_p.text_embedding.num_embeddings != cfg.n_symbols:
        model.enc_p.text_embedding = torch.nn.Embedding(cfg.n_symbols, cfg.hidden_channels)
    if cfg.ref_channels != cfg.spec_channels:
        model.ref_enc = modules.MelStyleEncoder(cfg.ref_channels, style_vector_dim=cfg.gin_channels)
        # GPT-SoVITS v2 feeds refer[:, :704] to the reference encoder; the v1-era reference code does not slice
        full = model.ref_enc.forward
        model.ref_enc.forward = lambda x, mask=None: full(x[:, : cfg.ref_channels], mask)
    if not cfg.with_posterior:
        del model.enc_q
    if perturb:
        perturb_(model, seed + 1)
    for layer in model.quantizer.vq.layers:  # as in released files; 0 would k-means re-init on the first forward
        layer._codebook.inited.fill_(1.0)
    return model.eval()


def perturb_(module, seed: int):
    """Perturbs every floating tensor of ``module.state_dict()`` in place, parameters and buffers alike: all-zero
    ones become 0.05 N(0, 1), the others are scaled elementwise by U(0.5, 1.5). Zero-initialised flow outputs,
    LayerNorm gammas of 1, weight-norm gains and the codebook would otherwise keep values that hide a dropped,
    swapped or misapplied tensor. Returns ``module``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict(keep_vars=True).values():
            if not t.is_floating_point():
                continue
            if t.any():
                t.mul_(0.5 + torch.rand(t.shape, generator=gen))
            else:
                t.copy_(0.05 * torch.randn(t.shape, generator=gen))
    return module


def unperturbed(module, fresh) -> list[str]:
    """The state-dict keys where ``module`` still equals ``fresh`` (the same construction, not perturbed)."""
    import torch

    current, initial = module.state_dict(), fresh.state_dict()
    return sorted(k for k, v in current.items() if torch.equal(v.cpu(), initial[k].cpu()))


def load_torch_synthesizer(src: str | Path):
    """(gpt-sovits-infer SynthesizerTrn in eval mode with the .pth weights in fp32, our VitsConfig)."""
    import torch

    from sovits2_jax.convert.gpt_sovits import config_from_pth, load_pth, normalize_dict
    from sovits2_jax.convert.mapping import ConversionError

    obj, _ = load_pth(src)
    weight = normalize_dict({k: v for k, v in obj["weight"].items()})
    cfg = config_from_pth(obj["config"], weight)
    model = make_torch_reference(cfg, perturb=False)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in weight.items()}, strict=False)
    if unexpected or [k for k in missing if not k.startswith("enc_q.")]:
        raise ConversionError(f"{src}: weights do not fit SynthesizerTrn: missing {missing}, unexpected {unexpected}")
    return model.eval().to(torch.float32), cfg


def torch_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


def ours_from_torch(cfg, state: dict[str, np.ndarray]):
    """(graphdef, params) of our SynthesizerTrn loaded from a torch state dict."""
    from sovits2_jax.convert.gpt_sovits import params_from_flat, torch_items_to_flat

    flat, _ = torch_items_to_flat(state.items(), cfg)
    return params_from_flat(cfg, flat)


@functools.lru_cache(maxsize=2)
def reference_pair(version: str = "v2", seed: int = 0):
    """(torch SynthesizerTrn, our graphdef, our params) at the released s2 sizes, cached per (version, seed)."""
    from sovits2_jax.configs.vits2 import gpt_sovits_v1, gpt_sovits_v2

    cfg = {"v1": gpt_sovits_v1, "v2": gpt_sovits_v2}[version]()
    model = make_torch_reference(cfg, seed)
    graphdef, params = ours_from_torch(cfg, torch_state(model))
    return cfg, model, graphdef, params


@functools.partial(jax.jit, static_argnums=0)
def jit_decode(graphdef, params, codes, text, refer, noise_scale, noise):
    """Our decode under jit (graphdef static, so equal models share one compilation)."""
    from flax import nnx

    return nnx.merge(graphdef, params).decode(codes, text, refer, noise_scale, noise=noise)


def make_inputs(cfg, *, code_frames: int, text_tokens: int, refer_frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        codes=rng.integers(0, cfg.codebook_size, (1, 1, code_frames)).astype(np.int64),
        text=rng.integers(0, cfg.n_symbols, (1, text_tokens)).astype(np.int64),
        refer=np.abs(rng.standard_normal((1, cfg.spec_channels, refer_frames))).astype(np.float32),
        noise_scale=np.asarray(0.0, np.float32),
    )


DEFAULT_SHAPES = dict(code_frames=24, text_tokens=17, refer_frames=73)


def build(
    src: str | None = None, *, component: str = "vits", device: str = "cpu", dtype: str = "float32", seed: int = 0
) -> ParityCase:
    """``src``: a GPT-SoVITS s2 .pth (v1 or v2) or None for a random released-size v2 reference."""
    import jax
    import jax.numpy as jnp
    import torch

    from sovits2_jax.parity.torch_refs import to_numpy, to_torch, torch_device

    tdev = torch_device(device)
    if src is None:
        cfg, model, graphdef, params = reference_pair("v2", seed)
    else:
        model, cfg = load_torch_synthesizer(src)
        graphdef, params = ours_from_torch(cfg, torch_state(model))
    if dtype == "bfloat16":
        # weight-normed modules cannot be deep-copied: rebuild the (seeded, identical) reference for the cast
        model = (make_torch_reference(cfg, seed) if src is None else model).to(torch.bfloat16)
    model = model.to(tdev)
    jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    params = jax.tree.map(lambda a: a.astype(jdtype), params)
    inputs = make_inputs(cfg, **DEFAULT_SHAPES, seed=seed)

    # noise_scale 0 makes decode deterministic; the whole-model tolerance covers the 32 kHz waveform
    def run_torch(x):
        with torch.no_grad():
            refer = to_torch(x["refer"], tdev).to(next(model.parameters()).dtype)
            o = model.decode(
                to_torch(x["codes"], tdev), to_torch(x["text"], tdev), refer, noise_scale=float(x["noise_scale"])
            )
        return {"wav": to_numpy(o.float())}

    def run_jax(x):
        wav = jit_decode(
            graphdef,
            params,
            jnp.asarray(x["codes"], jnp.int32),
            jnp.asarray(x["text"], jnp.int32),
            jnp.asarray(x["refer"]).transpose(0, 2, 1).astype(jdtype),
            jnp.asarray(x["noise_scale"], jdtype),
            # explicit zero noise: the same compiled function as a fixed-noise decode
            jnp.zeros((1, 2 * x["codes"].shape[-1], cfg.inter_channels), jdtype),
        )
        return {"wav": np.asarray(wav.astype(jnp.float32))[:, None, :]}

    return ParityCase(
        inputs=inputs,
        run_torch=run_torch,
        run_jax=run_jax,
        atol=MODEL_ATOL,
        info=dict(version=cfg.version, n_symbols=cfg.n_symbols, ref_channels=cfg.ref_channels),
    )
