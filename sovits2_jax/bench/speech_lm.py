"""Autoregressive decoding speed: our jitted prefill + while_loop decode vs the PyTorch references.

1. Plain Qwen2 LM, greedy, at batch 1 and 16: ours ``generate`` vs transformers ``generate`` (KV cache).
2. CosyVoice2 speech LM (same backbone size, 6561 speech tokens, RAS sampling) at batch 1: ours vs
   cosyvoice's ``Qwen2LM.inference`` (its per-token Python loop; it has no batched path).

python -m sovits2_jax.bench.speech_lm [--config=configs/qwen2.py:100m] [--prompt=64] [--new=128]
"""

from __future__ import annotations

from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import scratch_dir
from sovits2_jax.train.validate import validate

_CONFIG = cli.config_flag("configs/qwen2.py:100m", help="Qwen2 backbone config file[:arg]")
_PROMPT = flags.DEFINE_integer("prompt", 64, "prompt tokens")
_NEW = flags.DEFINE_integer("new", 128, "new tokens per row")
_BATCHES = flags.DEFINE_list("batches", ["1", "16"], "batch sizes for the plain LM comparison")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")
_SPEECH = flags.DEFINE_boolean("speech", True, "also time the CosyVoice2 speech LM against Qwen2LM.inference")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch intra-op threads (0 = the cores, as XLA)")


def bench_plain_lm(config, src, batches, prompt_len: int, new: int, repeats: int) -> None:
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from sovits2_jax.bench.timing import compare
    from sovits2_jax.convert import hf_qwen2
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.infer import generate as gen
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.models.qwen2 import Qwen2ForCausalLM

    graphdef, params = params_from_flat(
        lambda: Qwen2ForCausalLM(config, rngs=nnx.Rngs(0)), hf_qwen2.load_hf_params(src, config)
    )
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    ref = transformers.Qwen2ForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    print(
        f"# plain LM: {n_params / 1e6:.1f}M parameters, prompt {prompt_len}, {new} new tokens, greedy, "
        f"{jax.devices()[0].platform}",
        flush=True,
    )
    greedy = SamplingConfig(method="greedy")
    for b in batches:
        ids = np.random.default_rng(b).integers(0, config.vocab_size, (b, prompt_len)).astype(np.int32)
        lens = np.full(b, prompt_len)

        def ours(ids=ids, lens=lens):
            return gen.generate(
                graphdef, params, {"ids": ids}, lens, jax.random.key(0), max_len=new, min_len=new, sampling=greedy
            )

        ids_t = torch.as_tensor(ids, dtype=torch.long)

        def theirs(ids_t=ids_t):
            with torch.no_grad():
                return ref.generate(
                    ids_t,
                    attention_mask=torch.ones_like(ids_t),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    use_cache=True,
                    eos_token_id=None,
                    pad_token_id=0,
                )

        compare("speech_lm", f"qwen2 greedy decode batch {b}", ours, theirs, unit="ms/token", scale=1e3 / (b * new),
                repeats=repeats)  # fmt: skip


def bench_cosyvoice2(backbone, directory, new: int, repeats: int) -> None:
    import jax
    import numpy as np
    import torch
    from flax import nnx

    from sovits2_jax.bench.timing import compare
    from sovits2_jax.convert import cosyvoice2_llm
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.infer import generate as gen
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.models.speech_lm import SpeechLM
    from sovits2_jax.parity.references import llm as parity_llm

    src = parity_llm.write_tiny_model_dir(directory, backbone=backbone, speech_token_size=6561)
    config = parity_llm.read_model_dir(src)
    nested = cosyvoice2_llm.load_llm_pt(src / "llm.pt", config)
    graphdef, params = params_from_flat(lambda: SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))
    ref = parity_llm.reference_model(config, src / parity_llm.BLANK_EN)
    state = {k: v for k, v in torch.load(src / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    ref.load_state_dict(state)
    ref.eval()

    rng = np.random.default_rng(0)
    text_len = max(1, new // 20)
    n_tokens = text_len * 20  # min = max = 20x the text: both sides decode exactly this many tokens
    text = rng.integers(0, backbone.vocab_size, text_len)
    prompt_text = rng.integers(0, backbone.vocab_size, 20)
    prompt_speech = rng.integers(0, 6561, 100)
    batch = gen.cosyvoice2_batch(
        [text.tolist()], [prompt_text.tolist()], [prompt_speech.tolist()], min_ratio=20, max_ratio=20
    )

    def ours():
        out = gen.generate(
            graphdef,
            params,
            batch["prompt"],
            batch["prompt_len"],
            jax.random.key(0),
            min_len=batch["min_len"],
            max_len=batch["max_len"],
            sampling=SamplingConfig(),
            **gen.speech_decode_kwargs(config),
        )
        assert out.lengths[0] == n_tokens
        return out

    def theirs():
        with torch.no_grad():
            tokens = list(
                ref.inference(
                    text=torch.as_tensor(text)[None],
                    text_len=torch.tensor([text_len]),
                    prompt_text=torch.as_tensor(prompt_text)[None],
                    prompt_text_len=torch.tensor([20]),
                    prompt_speech_token=torch.as_tensor(prompt_speech)[None],
                    prompt_speech_token_len=torch.tensor([100]),
                    embedding=torch.zeros(0, 192),
                    max_token_text_ratio=20,
                    min_token_text_ratio=20,
                )
            )
        return tokens

    print(f"# cosyvoice2 speech LM: prompt {batch['prompt_len'][0]} positions, RAS sampling, batch 1", flush=True)
    compare("speech_lm", "cosyvoice2 RAS decode batch 1", ours, theirs, unit="ms/token", scale=1e3 / n_tokens,
            repeats=repeats)  # fmt: skip


def main(argv) -> int:
    del argv

    from sovits2_jax.bench.timing import machine_line, pin_threads
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.parity.random_reference import save_random_hf_qwen2

    pin_threads(_TORCH_THREADS.value)
    print(machine_line(), flush=True)
    config = Qwen2Config.from_dict(cli.validated(_CONFIG, validate).model.to_dict())
    src = save_random_hf_qwen2(scratch_dir("bench-speech-lm-"), config)
    bench_plain_lm(config, src, [int(b) for b in _BATCHES.value], _PROMPT.value, _NEW.value, _REPEATS.value)
    if _SPEECH.value:
        bench_cosyvoice2(config, scratch_dir("bench-cv2-llm-"), _NEW.value, _REPEATS.value)
    return 0


if __name__ == "__main__":
    cli.run(main)
