"""Demo synthesis with GPT-SoVITS2 (a directory holding ``ar/`` and ``vits/``): every same-speaker utterance of a
pair is a fused reference; texts sharing references decode in one batch."""

from __future__ import annotations

import collections

from sovits2_jax.demo.pairs import Pair, batches

MULTI_REFERENCE = True  # --references utterances fused per target


def _reference(row: dict):
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.infer.gpt_sovits2.tts import Reference

    wav, sr = load_audio(row["audio_data"])
    return Reference(wav, sr, row["text"], [int(t) for t in row["speech_token"]])


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
        refs = [_reference(rows[u]) for u in prompts]
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
    """Yields (utt, scores, {folder: (audio, sample rate)}): the VITS2 decoder from the truth's speech tokens, its
    text and the fused references (the vocoder rung), and the AR's sampled tokens against the truth's."""
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
        refs = [_reference(rows[u]) for u in prompts]
        for chunk in batches(utts, batch_size):
            try:
                sampled, inputs = model.speech_tokens([rows[u]["text"] for u in chunk], refs, seed + n)
            except SynthesisError as e:
                skips.update({u: str(e) for u in chunk})
                continue
            base = jax.random.fold_in(jax.random.key(seed + n), 1)
            for k, utt in enumerate(chunk):
                truth = [int(t) for t in rows[utt]["speech_token"]]
                wav = model.vocode(truth, inputs["vits_text"][k], inputs["refers"], key=jax.random.fold_in(base, k))
                yield utt, token_scores(sampled[k], truth), {"resynthesis": (wav, model.sample_rate)}
            n += len(chunk)
