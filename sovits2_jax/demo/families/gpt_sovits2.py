"""Demo synthesis with GPT-SoVITS2 (a directory holding ``ar/`` and ``vits/``): every same-speaker utterance of a
pair is a fused reference; texts sharing references decode in one batch. With an ``ssl_grvq`` VITS (the directory's
``hubert/`` beside it) the references' codes come from their audio, and the ladder's truth is the utterance's own
codes by the same path."""

from __future__ import annotations

import collections

from sovits2_jax.demo.pairs import Pair, batches

MULTI_REFERENCE = True  # --references utterances fused per target


def _reference(row: dict, model):
    """The row as a reference: its S3 tokens, or (an ssl_grvq VITS) none: the model takes codes from the audio."""
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.infer.gpt_sovits2.tts import Reference

    wav, sr = load_audio(row["audio_data"])
    return Reference(wav, sr, row["text"], None if model.grvq else [int(t) for t in row["speech_token"]])


def _truth(row: dict, model):
    """The row's own speech tokens, or (an ssl_grvq VITS) its [N, K] code frames from its audio."""
    if not model.grvq:
        return [int(t) for t in row["speech_token"]]
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.resample import resample
    from sovits2_jax.infer.gpt_sovits2.tts import SSL_RATE

    wav, sr = load_audio(row["audio_data"])
    return model.ssl_codes([resample(wav, sr, SSL_RATE)])[0].T.tolist()


def _codebook0(frames) -> list[int]:
    """Codebook 0 of [N, K] code frames (tokens as they are)."""
    return [f[0] if isinstance(f, (list, tuple)) else f for f in frames]


def synthesize(model_dir, rows, pairs, *, batch_size=8, seed=0, skips=None):
    """utt -> audio with ``GptSoVITS2`` (``model_dir/ar``, ``model_dir/vits``; the data's cosyvoice2 BPE), texts
    sharing references in one batch; and the sample rate."""
    from sovits2_jax.infer.gpt_sovits2.tts import GptSoVITS2, SynthesisError
    from sovits2_jax.text.tokenizer import get_tokenizer

    skips = {} if skips is None else skips
    model = GptSoVITS2.from_pretrained(model_dir, tokenizer=get_tokenizer("cosyvoice2"))
    by_prompts: dict[tuple[str, ...], list[Pair]] = collections.defaultdict(list)
    for p in pairs:
        by_prompts[p.prompts].append(p)
    out, n = {}, 0
    for prompts, group in by_prompts.items():
        refs = [_reference(rows[u], model) for u in prompts]
        for chunk in batches(group, batch_size):
            try:
                wavs = model.synthesize_batch([rows[p.utt]["text"] for p in chunk], refs, seed=seed + n)
            except SynthesisError as e:
                skips.update({p.utt: str(e) for p in chunk})
                continue
            out.update({p.utt: w for p, w in zip(chunk, wavs)})
            n += len(chunk)
            print(f"synthesize: {len(out)} of {len(pairs)} utterances", flush=True)
    return out, model.sample_rate


def ladder(model_dir, rows, pairs, *, seed=0, batch_size=8, skips=None):
    """Yields (utt, scores, {folder: (audio, sample rate)}): the VITS2 decoder from the truth's speech tokens (an
    ssl_grvq VITS: its codes from its audio), its text and the fused references (the vocoder rung), and the AR's
    sampled tokens against the truth's (codebook 0's with several codebooks)."""
    import jax

    from sovits2_jax.demo.ladder import token_scores
    from sovits2_jax.infer.gpt_sovits2.tts import GptSoVITS2, SynthesisError
    from sovits2_jax.text.tokenizer import get_tokenizer

    skips = {} if skips is None else skips
    model = GptSoVITS2.from_pretrained(model_dir, tokenizer=get_tokenizer("cosyvoice2"))
    by_prompts: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
    for utt, prompts in pairs:
        by_prompts[prompts].append(utt)
    n = 0
    for prompts, utts in by_prompts.items():
        refs = [_reference(rows[u], model) for u in prompts]
        for chunk in batches(utts, batch_size):
            try:
                sampled, inputs = model.speech_tokens([rows[u]["text"] for u in chunk], refs, seed + n)
            except SynthesisError as e:
                skips.update({u: str(e) for u in chunk})
                continue
            base = jax.random.fold_in(jax.random.key(seed + n), 1)
            for k, utt in enumerate(chunk):
                truth = _truth(rows[utt], model)
                wav = model.vocode(truth, inputs["vits_text"][k], inputs["refers"], key=jax.random.fold_in(base, k))
                scores = token_scores(_codebook0(sampled[k]), _codebook0(truth))
                yield utt, scores, {"resynthesis": (wav, model.sample_rate)}
            n += len(chunk)
