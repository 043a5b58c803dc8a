"""Whole-pipeline synthesis speed: our ``Engine`` vs the PyTorch reference (cosyvoice's ``Qwen2LM.inference`` then
``CosyVoice2Model.token2wav`` = flow.inference + hift.inference) with the same random-init weights.

Prints RTF (synthesis seconds per second of audio) at batch 1 and batch N, and the streaming first-chunk latency
(request -> first audio chunk: LM prefill, the first hop + look-ahead tokens, their flow chunk and HiFT), each the
median of ``--repeats`` interleaved rounds after a warm-up (``bench.timing``). The reference has no batched path:
its batch-N figure is its batch-1 time per second of audio (N sequential runs). Both
sides decode exactly ``20 * text_tokens`` speech tokens (min = max ratio), so they do the same work.

Then the peak resident memory of each figure's request, one side per child process (``--side``): each child builds
both sides' weights, frees the other side's model, warms its own up (compilation), and reports the kernel's
high-water mark over one request of each figure (``bench.timing.peak_rss_mib``). Both children have both libraries
loaded, so the figures compare the models and the requests' working memory on equal terms.

python -m sovits2_jax.bench.infer [--size=release] [--text_tokens=4] [--batch=8] [--repeats=5]
"""

from __future__ import annotations

import math

from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import scratch_dir

_SIZE = flags.DEFINE_string("size", "release", "model size preset (release = CosyVoice2-0.5B shapes, tiny)")
_TEXT = flags.DEFINE_integer("text_tokens", 4, "text tokens per request (20x as many speech tokens)")
_PROMPT = flags.DEFINE_integer("prompt_tokens", 50, "prompt speech tokens (2x as many prompt mel frames)")
_BATCH = flags.DEFINE_integer("batch", 8, "the larger batch size")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch intra-op threads (0 = the cores, as XLA)")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after one untimed warm-up")
_MEMORY = flags.DEFINE_boolean("memory", True, "also measure each side's peak RSS (a child process per side)")
_SIDE = flags.DEFINE_enum("side", None, ["ours", "torch"], "internal: the child process measuring one side's memory")
RATIO = 20
MEMORY_LINE = "peak RSS MiB: "


def build(size: str, directory):
    """(our Engine, torch Qwen2LM, torch CosyVoice2Model, request) over the same random weights."""
    import dataclasses

    import numpy as np
    import torch
    from flax import nnx

    from sovits2_jax.configs import flow as flow_presets
    from sovits2_jax.configs import hift as hift_presets
    from sovits2_jax.configs import qwen2 as qwen2_presets
    from sovits2_jax.convert import cosyvoice2_llm
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig
    from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.models.speech_lm import SpeechLM
    from sovits2_jax.parity.references import flow as pf
    from sovits2_jax.parity.references import hift as ph
    from sovits2_jax.parity.references import llm as parity_llm
    from sovits2_jax.parity.torch_refs import import_cosyvoice, to_numpy

    flow_cfg = flow_presets.named_config(size)
    backbone = Qwen2Config() if size == "release" else qwen2_presets.preset("tiny")
    backbone = dataclasses.replace(backbone, tie_word_embeddings=True)
    src = parity_llm.write_tiny_model_dir(directory, backbone=backbone, speech_token_size=flow_cfg.vocab_size)
    lm_cfg = parity_llm.read_model_dir(src)
    nested = cosyvoice2_llm.load_llm_pt(src / "llm.pt", lm_cfg)
    llm = (*params_from_flat(lambda: SpeechLM(lm_cfg, rngs=nnx.Rngs(0)), flatten(nested)), lm_cfg)
    llm_ref = parity_llm.reference_model(lm_cfg, src / parity_llm.BLANK_EN)
    state = torch.load(src / "llm.pt", weights_only=True)
    llm_ref.load_state_dict({k: v for k, v in state.items() if torch.is_tensor(v)})
    flow_ref = pf.build_reference(flow_cfg, seed=0)
    flow = pf._ours(flow_cfg, [(k, to_numpy(v)) for k, v in flow_ref.state_dict().items()], None)
    hift_cfg = hift_presets.named_config(size)
    hift_ref = ph.build_reference(hift_cfg, seed=0)
    hift = ph.convert([(k, to_numpy(v)) for k, v in hift_ref.state_dict().items()], hift_cfg)
    engine = Engine(llm, flow, hift, EngineConfig(min_ratio=RATIO, max_ratio=RATIO))
    flow_ref.decoder.rand_noise = torch.from_numpy(np.ascontiguousarray(engine.noise.T[None]))
    import_cosyvoice()
    from cosyvoice.cli.model import CosyVoice2Model

    rng = np.random.default_rng(0)
    p = _PROMPT.value
    tokens = rng.integers(0, flow_cfg.vocab_size, p).astype(np.int32)
    request = ModelInput(
        text=rng.integers(0, backbone.vocab_size, _TEXT.value), prompt_text=rng.integers(0, backbone.vocab_size, 10),
        llm_prompt_speech_token=tokens, flow_prompt_speech_token=tokens,
        prompt_speech_feat=(rng.standard_normal((2 * p, 80)) - 4).astype(np.float32),
        flow_embedding=rng.standard_normal(flow_cfg.spk_embed_dim).astype(np.float32),
    )  # fmt: skip
    return engine, llm_ref.eval(), CosyVoice2Model(None, flow_ref.eval(), hift_ref.eval()), request


def _torch_tokens(llm_ref, x, limit=None):
    import torch

    t = lambda a: torch.as_tensor(a, dtype=torch.int32)[None]
    out = []
    with torch.no_grad():
        for tok in llm_ref.inference(
            text=t(x.text), text_len=torch.tensor([len(x.text)]), prompt_text=t(x.prompt_text),
            prompt_text_len=torch.tensor([len(x.prompt_text)]), prompt_speech_token=t(x.llm_prompt_speech_token),
            prompt_speech_token_len=torch.tensor([len(x.llm_prompt_speech_token)]), embedding=torch.zeros(0, 192),
            max_token_text_ratio=RATIO, min_token_text_ratio=RATIO,
        ):  # fmt: skip
            out.append(int(tok))
            if limit is not None and len(out) >= limit:
                break
    return out


def _torch_token2wav(model, x, tokens, *, offset=0, stream=False, finalize=True):
    import torch

    uid = "bench"
    model.hift_cache_dict[uid] = None
    with torch.no_grad():
        wav = model.token2wav(
            token=torch.tensor(tokens, dtype=torch.int32)[None],
            prompt_token=torch.as_tensor(x.flow_prompt_speech_token, dtype=torch.int32)[None],
            prompt_feat=torch.from_numpy(x.prompt_speech_feat)[None],
            embedding=torch.from_numpy(x.flow_embedding)[None], token_offset=offset, uuid=uid, stream=stream,
            finalize=finalize,
        )  # fmt: skip
    model.hift_cache_dict.pop(uid)
    return wav


def _first_hop(prompt_tokens: int, hop: int = 25) -> int:
    """Tokens before CosyVoice2's first streamed chunk: the prompt's last partial hop filled, then one hop."""
    return hop + math.ceil(prompt_tokens / hop) * hop - prompt_tokens


def _sides(engine, llm_ref, model_ref, x, b: int) -> dict[str, tuple]:
    """Per figure, (ours, torch) callables of one request (the reference's batch-N figure is its batch-1 run)."""

    def ours_first_chunk():
        for _ in engine.stream([x], 0):
            return

    def torch_whole():
        return _torch_token2wav(model_ref, x, _torch_tokens(llm_ref, x))

    def torch_first_chunk():
        tokens = _torch_tokens(llm_ref, x, limit=_first_hop(len(x.llm_prompt_speech_token)) + 3)
        return _torch_token2wav(model_ref, x, tokens, stream=True, finalize=False)

    return {
        "RTF batch 1": (lambda: engine.synthesize([x], 0), torch_whole),
        f"RTF batch {b}": (lambda: engine.synthesize([x] * b, 0), torch_whole),
        "streaming first chunk": (ours_first_chunk, torch_first_chunk),
    }


def _measure_memory(side: str, sides: dict[str, tuple]) -> dict[str, float]:
    """Peak RSS (MiB) of one request per figure on one side, each right after its own warm-up."""
    from sovits2_jax.bench.timing import peak_rss_mib

    peaks = {}
    for what, pair in sides.items():
        call = pair[0 if side == "ours" else 1]
        call()
        peaks[what] = peak_rss_mib(call)
    return peaks


def _child_memory(side: str) -> dict[str, float]:
    """Runs this benchmark with ``--side`` in a child process; its figures."""
    import json
    import subprocess
    import sys

    forwarded = [f"--{f.name}={f.value}" for f in (_SIZE, _TEXT, _PROMPT, _BATCH, _TORCH_THREADS)]
    proc = subprocess.run([sys.executable, "-m", "sovits2_jax.bench.infer", f"--side={side}", *forwarded],
                          capture_output=True, text=True)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MEMORY_LINE)]
    if proc.returncode or not lines:
        raise cli.Error(f"the {side} memory child failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(lines[-1].removeprefix(MEMORY_LINE))


def main(argv) -> int:
    del argv
    import gc
    import json

    import jax

    from sovits2_jax.bench.timing import Samples, compare, interleaved, machine_line, pin_threads, record, report
    from sovits2_jax.infer import compile_cache

    compile_cache.enable()
    pin_threads(_TORCH_THREADS.value)
    engine, llm_ref, model_ref, x = build(_SIZE.value, scratch_dir("bench-infer-"))
    b = _BATCH.value
    if _SIDE.value:
        if _SIDE.value == "ours":
            sides = _sides(engine, None, None, x, b)
            del llm_ref, model_ref
        else:
            sides = _sides(None, llm_ref, model_ref, x, b)
            del engine
        gc.collect()
        print(MEMORY_LINE + json.dumps(_measure_memory(_SIDE.value, sides)), flush=True)
        return 0
    n_tokens = RATIO * _TEXT.value
    audio_s = n_tokens * 2 * 480 / 24000
    print(machine_line(), flush=True)
    print(
        f"# {_SIZE.value} CosyVoice2, {n_tokens} speech tokens = {audio_s:.2f} s of audio per request, prompt "
        f"{_PROMPT.value} tokens, {jax.devices()[0].platform}, {_REPEATS.value} interleaved repeats after a warm-up",
        flush=True,
    )
    (wav,) = engine.synthesize([x], 0)
    assert abs(len(wav) / 24000 - audio_s) < 1e-6, len(wav)
    sides = _sides(engine, llm_ref, model_ref, x, b)
    seconds = interleaved(
        {"ours 1": sides["RTF batch 1"][0], f"ours {b}": sides[f"RTF batch {b}"][0], "torch": sides["RTF batch 1"][1]},
        repeats=_REPEATS.value,
    )
    rtf = lambda name, per: Samples(tuple(t / per for t in seconds[name]))
    record("infer", "RTF batch 1", rtf("ours 1", audio_s), rtf("torch", audio_s), "s/s")
    record("infer", f"RTF batch {b} (torch: {b} sequential runs)", rtf(f"ours {b}", b * audio_s),
           rtf("torch", audio_s), "s/s")  # fmt: skip
    compare("infer", "streaming first-chunk latency batch 1", *sides["streaming first chunk"], repeats=_REPEATS.value)
    if _MEMORY.value:
        del engine, llm_ref, model_ref, sides
        gc.collect()
        ours, theirs = _child_memory("ours"), _child_memory("torch")
        for what in ours:
            report("infer", f"peak RSS, {what}", ours[what], theirs[what], "MiB")
    return 0


if __name__ == "__main__":
    cli.run(main)
