"""Where release-size CosyVoice2 inference spends its time, ours and PyTorch's side by side, stage by stage.

The same random weights and request as ``bench.infer`` (its flags: --size, --text_tokens, --prompt_tokens,
--repeats, --torch_threads). Every figure is a median of interleaved rounds after a warm-up (``bench.timing``):

- LM prefill + first token: the prompt through the LM and one sampled token;
- LM decode per token: (the whole decode - prefill + first token) / (tokens - 1), round by round;
- flow per second of audio: the 10-step CFG flow over the request's speech tokens (with its prompt);
- HiFT per second of audio: the vocoder over that mel;
- the whole request (its spread is wide on a 2-core machine: its parts' medians are the figures to compare).

python -m sovits2_jax.bench.infer_stages [--size=release] [--repeats=5]
"""

from __future__ import annotations

from sovits2_jax import cli
from sovits2_jax.bench import infer as bench_infer
from sovits2_jax.bench.timing import scratch_dir


def main(argv) -> int:
    del argv
    import jax
    import numpy as np
    import torch

    from sovits2_jax.bench.timing import Samples, interleaved, machine_line, pin_threads, record
    from sovits2_jax.infer import compile_cache
    from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig
    from sovits2_jax.infer.cosyvoice2.token2wav import flow_batch, hift_batch

    compile_cache.enable()
    pin_threads(bench_infer._TORCH_THREADS.value)
    engine, llm_ref, model_ref, x = bench_infer.build(bench_infer._SIZE.value, scratch_dir("bench-st-"))
    n_text = len(x.text)
    first = Engine(engine.llm, engine.flow, engine.hift, EngineConfig(min_ratio=1 / n_text, max_ratio=1 / n_text))
    (tokens,) = engine.speech_tokens([x], 0)
    n = len(tokens)
    audio_s = n * 2 * 480 / 24000
    repeats = bench_infer._REPEATS.value
    print(machine_line(), flush=True)
    print(f"# {bench_infer._SIZE.value} CosyVoice2, {n} speech tokens = {audio_s:.2f} s of audio, prompt "
          f"{len(x.llm_prompt_speech_token)} tokens, batch 1, {jax.devices()[0].platform}", flush=True)  # fmt: skip

    def t(a, dtype=torch.int32):
        return torch.as_tensor(np.asarray(a), dtype=dtype)[None]

    def torch_flow():
        with torch.no_grad():
            mel, _ = model_ref.flow.inference(
                token=t(tokens), token_len=torch.tensor([n], dtype=torch.int32),
                prompt_token=t(x.flow_prompt_speech_token),
                prompt_token_len=torch.tensor([len(x.flow_prompt_speech_token)], dtype=torch.int32),
                prompt_feat=t(x.prompt_speech_feat, torch.float32),
                prompt_feat_len=torch.tensor([len(x.prompt_speech_feat)], dtype=torch.int32),
                embedding=t(x.flow_embedding, torch.float32), streaming=False, finalize=True,
            )  # fmt: skip
        return mel

    def ours_flow():
        return flow_batch(*engine.flow, [tokens], [x.flow_prompt_speech_token], [x.prompt_speech_feat],
                          [x.flow_embedding], engine.noise)[0]  # fmt: skip

    mel = ours_flow()
    mel_t = torch_flow()

    def torch_hift():
        with torch.no_grad():
            return model_ref.hift.inference(speech_feat=mel_t, cache_source=torch.zeros(1, 1, 0))[0]

    sides = {
        "ours first": lambda: first.speech_tokens([x], 0),
        "ours lm": lambda: engine.speech_tokens([x], 0),
        "ours flow": ours_flow,
        "ours hift": lambda: hift_batch(*engine.hift, [mel], None),
        "ours whole": lambda: engine.synthesize([x], 0),
        "torch first": lambda: bench_infer._torch_tokens(llm_ref, x, limit=1),
        "torch lm": lambda: bench_infer._torch_tokens(llm_ref, x),
        "torch flow": torch_flow,
        "torch hift": torch_hift,
        "torch whole": lambda: bench_infer._torch_token2wav(model_ref, x, bench_infer._torch_tokens(llm_ref, x)),
    }
    s = interleaved(sides, repeats=repeats)

    def samples(side: str, scale: float = 1e3) -> Samples:
        return Samples(tuple(v * scale for v in s[side]))

    def per_token(side: str) -> Samples:
        return Samples(tuple((a - b) * 1e3 / (n - 1) for a, b in zip(s[f"{side} lm"], s[f"{side} first"])))

    name = "infer_stages"
    record(name, "LM prefill + first token", samples("ours first"), samples("torch first"), "ms")
    record(name, "LM decode per token", per_token("ours"), per_token("torch"), "ms")
    record(name, "flow (10 steps, CFG) per second of audio", samples("ours flow", 1 / audio_s),
           samples("torch flow", 1 / audio_s), "s/s")  # fmt: skip
    record(name, "HiFT per second of audio", samples("ours hift", 1 / audio_s), samples("torch hift", 1 / audio_s),
           "s/s")  # fmt: skip
    record(name, "whole request", samples("ours whole"), samples("torch whole"), "ms")
    return 0


if __name__ == "__main__":
    cli.run(main)
